"""litpipe's module and data under a bare Lightning Trainer: what the framework alone costs.

The same LightningModule and DataModule the train stage builds (seeds' MLP, batch 64, fp32,
deterministic), but no callbacks, checkpoints, progress bar, MLflow or pictures. Between
this and bench/raw_loop.py lies Lightning's own per-step loop; between this and litpipe's
train stage lies everything litpipe adds. Prints one JSON line: each epoch's wall time,
validation included.

``--minimal``: the floor of any loop under Lightning's automatic optimisation instead. A
LightningModule that does nothing but the raw loop's arithmetic (the loss, no tally, no
gradient norm, no normalisation), with the fused Adam the raw loop lacks, on litpipe's
DataModule, under a bare Trainer without even Lightning's pass-through profiler. Whatever
litpipe does per step comes on top of this.

    python bench/lightning_loop.py --processed data/processed --epochs 2 --batch 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import raw_loop
import torch
from torch.nn import functional as F

from litpipe.data.datamodule import ArrayDataModule
from litpipe.model.module import LitClassifier
from litpipe.training.device import deterministic_without_fill, skip_cuda_probes
from litpipe.training.trainer import NoProfiler


class EpochTimer(L.Callback):
    """Wall time from each training epoch's start to its end (validation runs inside)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._t0)


def bare_trainer(max_epochs: int, callback: L.Callback, **settings: Any) -> L.Trainer:
    """A CPU Trainer in fp32 with nothing of its own (no logger, checkpoints, progress bar,
    model summary or sanity check) and one timing ``callback``: what every bare-Lightning
    path of the benchmarks shares; ``settings`` are the few where they differ."""
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, precision="32-true",
                     logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0,
                     callbacks=[callback], **settings)


class Minimal(L.LightningModule):
    """The raw loop's network and arithmetic as a LightningModule, and nothing else."""

    def __init__(self, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = raw_loop.mlp(list(hidden), 28 * 28, 10)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
                      ) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
                        ) -> None:
        self.net(batch[0]).argmax(1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3, fused=True)


def minimal_epochs(processed: Path, n: int, batch: int = 64,
                   hidden: tuple[int, ...] = (256, 128)) -> list[float]:
    """Fit a fresh :class:`Minimal` for ``n`` epochs: each epoch's wall time."""
    skip_cuda_probes()
    L.seed_everything(0, verbose=False)
    dm = ArrayDataModule(processed, batch_size=batch, seed=0, eval_batch_size=250)
    timer = EpochTimer()
    bare_trainer(n, timer, profiler=NoProfiler()).fit(Minimal(hidden), datamodule=dm)
    return timer.times


def litpipe_module(dm: ArrayDataModule, hidden: tuple[int, ...]) -> LitClassifier:
    """litpipe's classifier module with the seeds' MLP, as the train stage builds it."""
    s = dm.stats
    return LitClassifier(network="mlp", in_shape=list(s["shape"]), classes=s["classes"],
                         mean=s["mean"], std=s["std"], channels=[32], convs_per_block=1,
                         hidden=list(hidden), dropout=0.0, latent_dim=16, optimizer="adam",
                         lr=1e-3, weight_decay=0.0, momentum=0.9, scheduler="none",
                         step_size=1, gamma=0.1, label_smoothing=0.0, test_time_flip=False)


def epochs(processed: Path, n: int, batch: int = 64, hidden: tuple[int, ...] = (256, 128)
           ) -> list[float]:
    """Fit a fresh module for ``n`` epochs under a bare Trainer: each epoch's wall time
    (bench/loop_alternation.py calls this between the other paths' epochs)."""
    skip_cuda_probes()  # as the train stage does: the comparison is of loops, not of probes
    L.seed_everything(0, verbose=False)
    dm = ArrayDataModule(processed, batch_size=batch, seed=0, eval_batch_size=250)
    module = litpipe_module(dm, hidden)
    timer = EpochTimer()
    trainer = bare_trainer(n, timer, deterministic=True)
    deterministic_without_fill()
    trainer.fit(module, datamodule=dm)
    return timer.times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", default="256,128")
    ap.add_argument("--minimal", action="store_true",
                    help="the floor of any Lightning loop instead (see the docstring)")
    args = ap.parse_args()
    fit = minimal_epochs if args.minimal else epochs
    print(json.dumps({"epoch_s": fit(args.processed, args.epochs, args.batch,
                                     tuple(int(h) for h in args.hidden.split(",")))}))


if __name__ == "__main__":
    main()
