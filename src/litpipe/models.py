"""Plain ``nn.Module`` networks, built from params and the data's shape.

The networks take float images in [0, 1] shaped N×C×H×W and normalise inside ``forward``
(the per-channel mean/std are buffers). That makes the exported ONNX/TorchScript models
self-contained: a user feeds pixels/255 and needs no preprocessing recipe.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from litpipe.config import ModelConfig


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics stored as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _mlp_head(in_features: int, hidden: Sequence[int], num_classes: int, dropout: float
              ) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = h
    layers.append(nn.Linear(in_features, num_classes))
    return layers


class SmallCNN(nn.Module):
    """Conv(3×3)–BatchNorm–ReLU–MaxPool blocks, then a fully-connected head.

    One conv per block keeps an epoch of Fashion-MNIST at tens of seconds on two CPU cores
    while still clearing 92 % test accuracy in a few epochs.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int,
                 channels: Sequence[int], hidden: Sequence[int], dropout: float,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        c, h, w = in_shape
        blocks: list[nn.Module] = [Normalize(mean, std)]
        for out_c in channels:
            blocks += [nn.Conv2d(c, out_c, 3, padding=1, bias=False), nn.BatchNorm2d(out_c),
                       nn.ReLU(inplace=True)]
            if min(h, w) >= 2:  # tiny inputs (8×8 digits) stop pooling at 1×1
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out_c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  *_mlp_head(c * h * w, hidden, num_classes, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """The seeds' fully-connected classifier (e.g. 784-256-128-10), sizes from params."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int,
                 hidden: Sequence[int], dropout: float,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        c, h, w = in_shape
        self.net = nn.Sequential(Normalize(mean, std), nn.Flatten(),
                                 *_mlp_head(c * h * w, hidden, num_classes, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_network(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int,
                  mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """Instantiate ``cfg.name`` for data of ``in_shape`` (C, H, W) and ``num_classes``."""
    if cfg.name == "cnn":
        return SmallCNN(in_shape, num_classes, cfg.channels, cfg.hidden, cfg.dropout, mean, std)
    if cfg.name == "mlp":
        return MLP(in_shape, num_classes, cfg.hidden, cfg.dropout, mean, std)
    raise ValueError(f"model.name: unknown model {cfg.name!r}")
