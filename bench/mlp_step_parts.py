"""Where the seeds' MLP's training step goes, piece by piece: ``python bench/mlp_step_parts.py``.

The raw loop of bench/raw_loop.py, then the same loop with what litpipe's module adds to
each step, one piece at a time: the fused Adam (``model/module.py``), the accuracy tally,
the gradient norm (the history's ``grad_norm_max`` and the divergence check) and the loss's
finiteness check (``NonFiniteStop``). Variants alternate in one process, ``ROUNDS`` rounds of
300 steps each; prints each variant's median milliseconds a step. What is left between the
last variant and litpipe's train stage is Lightning's own loop (bench/lightning_loop.py).

    python bench/mlp_step_parts.py 5
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from litpipe.training.device import skip_cuda_probes

PROCESSED = Path(__file__).resolve().parents[1] / "data/processed"
VARIANTS = ["raw", "raw+fused", "raw+fused+tally", "raw+fused+tally+norm",
            "raw+fused+tally+norm+finite"]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                         nn.ReLU(), nn.Linear(128, 10))


def ms_per_step(variant: str, x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> float:
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3,
                           fused=True if "fused" in variant else None)
    params = list(model.parameters())
    t0 = time.perf_counter()
    for idx in torch.randperm(len(x)).split(64)[:steps]:
        logits = model(x[idx].float().div(255.0))
        loss = F.cross_entropy(logits, y[idx])
        if "tally" in variant:
            (logits.detach().argmax(1) == y[idx]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if "norm" in variant:
            float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(
                [p.grad for p in params]))))
        if "finite" in variant:
            bool(torch.isfinite(loss).all())
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    skip_cuda_probes()  # as the train stage does
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(PROCESSED / "train_x.npy"))
    y = torch.from_numpy(np.load(PROCESSED / "train_y.npy")).long()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v in VARIANTS:
            times[v].append(ms_per_step(v, x, y))
    for v, t in times.items():
        print(f"{v:30s} {statistics.median(t):.3f} ms a step (median of {rounds})")


if __name__ == "__main__":
    main()
