"""A hand-written PyTorch training loop: the floor litpipe's train stage is measured against.

Same work per epoch as litpipe's train stage: shuffle, uint8 → float in [0, 1] per batch,
forward/backward/step, then one pass over the validation set. No framework, no logging.
Prints one JSON line: the wall time of each epoch.

    python bench/raw_loop.py --processed data/processed --epochs 2 --batch 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def mlp(hidden: list[int], in_features: int, classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU()]
        in_features = h
    return nn.Sequential(*layers, nn.Linear(in_features, classes))


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, idx: torch.Tensor) -> None:
    """One optimiser step on rows ``idx``: uint8 → float in [0, 1], forward, backward, step
    (bench/lightning_floor.py times this same step)."""
    loss = F.cross_entropy(model(x[idx].float().div(255.0)), y[idx])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def epochs(processed: Path, n: int, batch: int = 64, hidden: tuple[int, ...] = (256, 128)
           ) -> tuple[list[float], float]:
    """Train a fresh MLP for ``n`` epochs: each epoch's wall time, and the last validation
    accuracy (bench/loop_alternation.py calls this between the other paths' epochs)."""
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(processed / "train_x.npy"))
    y = torch.from_numpy(np.load(processed / "train_y.npy"))
    vx = torch.from_numpy(np.load(processed / "val_x.npy"))
    vy = torch.from_numpy(np.load(processed / "val_y.npy"))
    model = mlp(list(hidden), x[0].numel(), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    correct = 0
    for _ in range(n):
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            train_step(model, opt, x, y, idx)
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(vx[i].float().div(255.0)).argmax(1) == vy[i]).sum())
                          for i in torch.arange(len(vx)).split(1000))
        times.append(time.perf_counter() - t0)
    return times, correct / len(vx)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", default="256,128")
    args = ap.parse_args()
    times, acc = epochs(args.processed, args.epochs, args.batch,
                        tuple(int(h) for h in args.hidden.split(",")))
    print(json.dumps({"epoch_s": times, "val_acc": acc}))


if __name__ == "__main__":
    main()
