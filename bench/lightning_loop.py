"""litpipe's module and data under a bare Lightning Trainer: what the framework alone costs.

The same LightningModule and DataModule the train stage builds (seeds' MLP, batch 64, fp32,
deterministic), but no callbacks, checkpoints, progress bar, MLflow or pictures. Between
this and bench/raw_loop.py lies Lightning's own per-step loop; between this and litpipe's
train stage lies everything litpipe adds. Prints one JSON line: each epoch's wall time,
validation included.

    python bench/lightning_loop.py --processed data/processed --epochs 2 --batch 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L

from litpipe.data.datamodule import ArrayDataModule
from litpipe.model.module import LitClassifier
from litpipe.training.device import deterministic_without_fill, skip_cuda_probes


class EpochTimer(L.Callback):
    """Wall time from each training epoch's start to its end (validation runs inside)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._t0)


def epochs(processed: Path, n: int, batch: int = 64, hidden: tuple[int, ...] = (256, 128)
           ) -> list[float]:
    """Fit a fresh module for ``n`` epochs under a bare Trainer: each epoch's wall time
    (bench/loop_alternation.py calls this between the other paths' epochs)."""
    skip_cuda_probes()  # as the train stage does: the comparison is of loops, not of probes
    L.seed_everything(0, verbose=False)
    dm = ArrayDataModule(processed, batch_size=batch, seed=0, eval_batch_size=250)
    s = dm.stats
    module = LitClassifier(network="mlp", in_shape=list(s["shape"]), classes=s["classes"],
                           mean=s["mean"], std=s["std"], channels=[32], convs_per_block=1,
                           hidden=list(hidden), dropout=0.0,
                           latent_dim=16, optimizer="adam", lr=1e-3, weight_decay=0.0,
                           momentum=0.9, scheduler="none", step_size=1, gamma=0.1,
                           label_smoothing=0.0, test_time_flip=False)
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=n, accelerator="cpu", devices=1,
                        precision="32-true", deterministic=True, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[timer])
    deterministic_without_fill()
    trainer.fit(module, datamodule=dm)
    return timer.times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", default="256,128")
    args = ap.parse_args()
    print(json.dumps({"epoch_s": epochs(args.processed, args.epochs, args.batch,
                                        tuple(int(h) for h in args.hidden.split(",")))}))


if __name__ == "__main__":
    main()
