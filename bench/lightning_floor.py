"""What a training step of the seeds' MLP costs under Lightning, against the raw loop's:
``python bench/lightning_floor.py --rounds 30``.

Four ways to take the same step (batch 64, fp32): the raw loop (bench/raw_loop.py: the
default Adam), the raw loop with the fused Adam litpipe uses, the least any module costs
under Lightning's automatic optimisation (bench/lightning_loop.py's ``Minimal``: the raw
loop's arithmetic and the fused Adam, litpipe's DataModule, a bare Trainer) and litpipe's
own module under that Trainer. Each round times steps ``WARM`` to ``WARM + STEPS`` of a
fresh model of each, in turn, in one process: short fits, interleaved many times, so that
a slow minute of a shared machine lands on every variant alike. Validation, checkpoints and
epoch ends are left out: the step is what repeats.

Prints each variant's milliseconds a step (fastest, first quartile, median) and its ratio
to the raw loop (fastest to fastest, and the median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import lightning_loop
import numpy as np
import raw_loop
import torch

from litpipe.data.datamodule import ArrayDataModule
from litpipe.training.device import deterministic_without_fill, skip_cuda_probes
from litpipe.training.trainer import NoProfiler

ROOT = Path(__file__).resolve().parents[1]
WARM, STEPS = 10, 100


class StepTimer(L.Callback):
    """Milliseconds a step over steps WARM..WARM+STEPS; then stops the fit."""

    def __init__(self) -> None:
        self.ms = 0.0
        self._t0 = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: object, batch_idx: int) -> None:
        if batch_idx == WARM:
            self._t0 = time.perf_counter()
        elif batch_idx == WARM + STEPS:
            self.ms = (time.perf_counter() - self._t0) / STEPS * 1e3
            trainer.should_stop = True


def lightning_step(processed: Path, litpipe: bool) -> float:
    """A fresh module's milliseconds a step under a bare Trainer (deterministic, as the
    train stage runs; on or off made no difference to this step)."""
    dm = ArrayDataModule(processed, batch_size=64, seed=0, eval_batch_size=250)
    module = (lightning_loop.litpipe_module(dm, (256, 128)) if litpipe
              else lightning_loop.Minimal((256, 128)))
    timer = StepTimer()
    trainer = lightning_loop.bare_trainer(1, timer, deterministic=True, limit_val_batches=0,
                                          profiler=NoProfiler())
    deterministic_without_fill()
    trainer.fit(module, datamodule=dm)
    return timer.ms


def raw_step(x: torch.Tensor, y: torch.Tensor, fused: bool) -> float:
    """bench/raw_loop.py's step (optionally with the fused Adam): milliseconds a step."""
    model = raw_loop.mlp([256, 128], x[0].numel(), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    t0 = 0.0
    for i, idx in enumerate(torch.randperm(len(x)).split(64)[:WARM + STEPS + 1]):
        if i == WARM:
            t0 = time.perf_counter()
        elif i == WARM + STEPS:
            break
        raw_loop.train_step(model, opt, x, y, idx)
    return (time.perf_counter() - t0) / STEPS * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--processed", type=Path, default=ROOT / "data/processed")
    args = ap.parse_args()
    skip_cuda_probes()  # as the train stage does, for every variant alike
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(args.processed / "train_x.npy"))
    y = torch.from_numpy(np.load(args.processed / "train_y.npy")).long()
    variants: dict[str, Callable[[], float]] = {
        "raw loop": lambda: raw_step(x, y, fused=False),
        "raw loop, fused Adam": lambda: raw_step(x, y, fused=True),
        "minimal Lightning module": lambda: lightning_step(args.processed, litpipe=False),
        "litpipe's module": lambda: lightning_step(args.processed, litpipe=True),
    }
    ms: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            torch.use_deterministic_algorithms(False)  # the Trainer turns it on
            ms[name].append(step())
    raw = ms["raw loop"]
    for name, t in ms.items():
        q = sorted(t)
        per_round = statistics.median(a / b for a, b in zip(t, raw, strict=True))
        print(f"{name:26s} {q[0]:.3f} / {q[len(q) // 4]:.3f} / {statistics.median(t):.3f} "
              f"ms a step (fastest / first quartile / median); against the raw loop "
              f"{q[0] / min(raw):.3f}x fastest, {per_round:.3f}x per round")


if __name__ == "__main__":
    main()
