"""Plain ``nn.Module`` networks, built from params and the data's shape.

The networks take float images in [0, 1] shaped N×C×H×W and normalise inside ``forward``
(the per-channel mean/std are buffers). That makes the exported ONNX/TorchScript models
self-contained: a user feeds pixels/255 and needs no preprocessing recipe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from litpipe.catalog import NETWORKS


@dataclass(frozen=True)
class NetworkArgs:
    """What a network is built from (``model.*`` and the data's shape and statistics); every
    network class takes one, so the builder needs no branch per network."""

    in_shape: tuple[int, int, int]  # C, H, W
    classes: int
    mean: Sequence[float]
    std: Sequence[float]
    channels: Sequence[int]
    convs_per_block: int
    hidden: Sequence[int]
    dropout: float
    latent_dim: int


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics stored as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def dropout_layer(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or a pass-through where ``p`` is 0: a zero-rate Dropout returns its
    input unchanged but still costs a module call and its checks on every step. Neither
    holds weights, so checkpoints load into either."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _mlp_head(in_features: int, hidden: Sequence[int], num_classes: int, p: float
              ) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU(inplace=True), dropout_layer(p)]
        in_features = h
    layers.append(nn.Linear(in_features, num_classes))
    return layers


class SmallCNN(nn.Module):
    """Blocks of ``convs_per_block`` × (Conv 3×3–BatchNorm–ReLU) then MaxPool, then a
    fully-connected head.

    One conv per block is the cheapest net that clears 92 % on Fashion-MNIST; two per block
    (a small VGG) is what the default recipe uses to pass 94 % (README, "Performance").
    """

    def __init__(self, a: NetworkArgs) -> None:
        super().__init__()
        c, h, w = a.in_shape
        blocks: list[nn.Module] = [Normalize(a.mean, a.std)]
        for out_c in a.channels:
            for _ in range(a.convs_per_block):
                blocks += [nn.Conv2d(c, out_c, 3, padding=1, bias=False),
                           nn.BatchNorm2d(out_c), nn.ReLU(inplace=True)]
                c = out_c
            if min(h, w) >= 2:  # tiny inputs (8×8 digits) stop pooling at 1×1
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), dropout_layer(a.dropout),
                                  *_mlp_head(c * h * w, a.hidden, a.classes, a.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """A fully-connected classifier (e.g. 784-256-128-10), sizes from ``model.hidden``."""

    def __init__(self, a: NetworkArgs) -> None:
        super().__init__()
        c, h, w = a.in_shape
        self.net = nn.Sequential(Normalize(a.mean, a.std), nn.Flatten(),
                                 *_mlp_head(c * h * w, a.hidden, a.classes, a.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CifarCNN(nn.Module):
    """The classic small CIFAR-10 network: conv 32-32-pool-64-64-pool, then the
    fully-connected ``model.hidden`` layers (e.g. 512-128) and the classes.

    The flattened size comes from a dry run on ``in_shape``, so the same net works on 28×28
    grey or 32×32 colour input.
    """

    def __init__(self, a: NetworkArgs) -> None:
        super().__init__()
        c = a.in_shape[0]
        self.features = nn.Sequential(
            Normalize(a.mean, a.std),
            nn.Conv2d(c, 32, 3), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        with torch.no_grad():
            n = self.features(torch.zeros(1, *a.in_shape)).numel()
        self.head = nn.Sequential(nn.Flatten(), *_mlp_head(n, a.hidden, a.classes, a.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AutoEncoder(nn.Module):
    """Encoder/decoder: flatten → hidden → latent → hidden → image in [0, 1].

    Input and output are both images in [0, 1] of ``in_shape``; the loss is their MSE.
    """

    def __init__(self, a: NetworkArgs) -> None:
        super().__init__()
        self.in_shape = tuple(a.in_shape)
        hidden, latent_dim = a.hidden, a.latent_dim
        n = int(torch.tensor(a.in_shape).prod())
        enc: list[nn.Module] = [nn.Flatten()]
        width = n
        for h in hidden:
            enc += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        enc.append(nn.Linear(width, latent_dim))
        dec: list[nn.Module] = []
        width = latent_dim
        for h in reversed(hidden):
            dec += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        dec += [nn.Linear(width, n), nn.Sigmoid()]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).view(-1, *self.in_shape)


class MirrorAveraged(nn.Module):
    """A classifier that, outside training, answers with the mean of the image's and its
    mirror's class probabilities (flip test-time augmentation), as log-probabilities.

    Inside the network rather than in the evaluate stage, so that validation, evaluate,
    the exported ONNX and TorchScript models and every server compute the same thing: the
    answers users get are the ones the reported metrics measured. Log-probabilities are
    valid logits (their softmax is the mean), computed with a log-sum-exp so that a class
    whose probability underflows in both views gives a finite loss.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.net(x)
        views = torch.stack([torch.log_softmax(self.net(x), dim=1),
                             torch.log_softmax(self.net(x.flip(-1)), dim=1)])
        return torch.logsumexp(views, dim=0) - math.log(2.0)


def build_network(name: str, in_shape: tuple[int, int, int], classes: int,
                  mean: Sequence[float], std: Sequence[float], channels: Sequence[int],
                  convs_per_block: int, hidden: Sequence[int], dropout: float,
                  latent_dim: int, test_time_flip: bool) -> nn.Module:
    """Network ``name`` (``model.name``, an entry of :data:`NETWORKS`) for images of
    ``in_shape`` (C, H, W); a classifier with ``test_time_flip`` answers for image and
    mirror together (:class:`MirrorAveraged`).
    """
    entry = NETWORKS[name]
    net = entry.load()(NetworkArgs(tuple(in_shape), classes, mean, std, channels,
                                   convs_per_block, hidden, dropout, latent_dim))
    if test_time_flip and entry.task == "classification":
        return MirrorAveraged(net)
    return net
