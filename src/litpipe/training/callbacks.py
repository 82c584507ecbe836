"""The callbacks the train stage adds to Lightning's: per-epoch seeding (exact resume),
per-epoch history and validation pictures, both logged to the model's MLflow run, and a
ModelCheckpoint that resumes whole."""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch import callbacks as lightning_callbacks
from lightning.pytorch.callbacks import Callback

from litpipe.cores import CoreShare
from litpipe.data.datamodule import ArrayDataModule, epoch_seed
from litpipe.data.pixels import to_unit_range
from litpipe.errors import LitpipeError
from litpipe.pictures.grids import prediction_grid, reconstruction_pairs
from litpipe.tracking.run import TrackedRun

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                  "grad_norm_max")


class ModelCheckpoint(lightning_callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, which also restores ``current_score`` on resume.

    Lightning saves ``current_score`` (the score of the last checkpoint this callback wrote)
    but does not load it back, so a resumed run holds None until the callback next saves.
    When the epochs after a kill never improve the metric, the resumed run's ``last.ckpt``
    then differs from an uninterrupted run's in that one value
    (``tests/e2e/test_resume.py``). The class keeps Lightning's name: a callback's state is
    keyed in the checkpoint by its class name, so existing checkpoints load into it and
    :func:`litpipe.training.resume.export_checkpoint` finds it.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:  # as Lightning's fields
            self.current_score = state_dict.get("current_score", self.current_score)

    @functools.cached_property
    def state_key(self) -> str:
        """Lightning's key (built from the monitor, the mode and the save intervals, which
        never change after ``__init__``), built once: Lightning reads it on every hook call
        to name the call for the profiler, six times a training step."""
        return super().state_key

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning's hook only saves for every_n_train_steps or train_time_interval, after
        # reading the trainer's state on every step; litpipe saves at epoch ends.
        if self._every_n_train_steps or self._train_time_interval:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class EpochSeeding(Callback):
    """Seeds every random stream from ``(seed, epoch)`` as each training epoch starts.

    Dropout (the global RNG, per rank), the shuffle order and the augmentation then depend
    only on the epoch, so a run resumed from the checkpoint of epoch ``e - 1`` trains epoch
    ``e`` exactly as an uninterrupted run does, with no generator state to save.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run that early stopping had already ended, restored from its last checkpoint,
        # must not train one more epoch before early stopping looks again.
        if any(getattr(cb, "stopped_epoch", 0) for cb in trainer.callbacks):
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        s = epoch_seed(self.seed, epoch, f"dropout-{trainer.global_rank}")
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s)
        if isinstance(trainer.datamodule, ArrayDataModule):
            trainer.datamodule.set_epoch(epoch)


HOLD_ENV = "LITPIPE_HOLD_AT_EPOCH"  # "N:DIR": see HoldAtEpoch


class HoldAtEpoch(Callback):
    """Holds a training at the start of epoch ``epoch`` (0-based; the previous epoch's
    checkpoint is written) until ``directory/release`` exists, after creating
    ``directory/held``.

    For tests that signal, edit or kill a training at a known point: without it they would
    race the training's speed. The train stage adds it only when ``LITPIPE_HOLD_AT_EPOCH``
    is set to ``N:DIR``; a signal that arrives while it waits stops the training there.
    """

    def __init__(self, epoch: int, directory: Path) -> None:
        self.epoch, self.directory = epoch, directory

    @classmethod
    def from_env(cls) -> HoldAtEpoch | None:
        value = os.environ.get(HOLD_ENV)
        if not value:
            return None
        epoch, _, directory = value.partition(":")
        return cls(int(epoch), Path(directory))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != self.epoch:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "held").touch()
        while not (self.directory / "release").exists():
            time.sleep(0.05)


class NonFiniteError(LitpipeError):
    """Training diverged: a loss or gradient norm went NaN or infinite."""


class NonFiniteStop(Callback):
    """Stops training at the first optimiser step whose loss or gradient norm is not finite.

    Lightning's EarlyStopping notices a NaN only in the monitored validation metric, at the
    epoch's end, and then ends the fit as a success: the run would be FINISHED and a model
    of the last finite epoch exported, with nothing saying why. This raises instead, naming
    the epoch, the step and what went non-finite; the train stage marks the run FAILED and
    writes no model. Checking costs one comparison a step: the loss is already computed,
    and the module keeps the gradient norm it tracks for the history.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        what = None
        # The loss is one number: reading it is one operation, checking it as a tensor three.
        if isinstance(loss, torch.Tensor) and not math.isfinite(loss.item()):
            what = f"the training loss is {float(loss)}"
        elif not math.isfinite(getattr(pl_module, "grad_norm", 0.0)):
            what = f"the gradient norm is {pl_module.grad_norm}"
        if what is not None:
            raise NonFiniteError(
                f"training diverged at epoch {trainer.current_epoch + 1}, step "
                f"{trainer.global_step}: {what}. Nothing was written as a model and the run "
                "is FAILED. Try a lower optimizer.lr, gradient clipping "
                "(trainer.gradient_clip_val: 1.0) or fp32 (trainer.precision: 32-true); "
                "callbacks.stop_on_non_finite: false trains on regardless")


class EpochHistory(Callback):
    """Collects one row per epoch and logs it to MLflow with ``step = epoch``.

    Lightning's loggers plot epoch metrics against the global step; users comparing runs
    with different batch sizes want epochs on the x axis. ``run`` is None on the ranks
    other than 0 of a multi-process run: only rank 0 talks to MLflow.

    The rows are part of Lightning's checkpoint (:meth:`state_dict`), so a resumed run's
    ``reports/train_history.csv`` is whole; epochs up to ``logged_upto`` are already in
    MLflow and are not logged twice. Timings go to MLflow only: the CSV is a DVC output and
    must be the same bytes for the same params.
    """

    def __init__(self, run: TrackedRun | None, logged_upto: int = -1) -> None:
        self.run = run
        self.rows: list[dict[str, float]] = []
        self.logged_upto = logged_upto  # the last epoch already in MLflow (a resumed run)
        self._t0 = 0.0
        self._samples = 0
        self.samples_trained = 0  # all epochs, all ranks: what the training FLOPs count
        self._lr = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "samples_trained": self.samples_trained}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.samples_trained = int(state_dict.get("samples_trained", 0))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._samples = 0
        # The rate this epoch trains with (epoch-interval schedulers step at its end).
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._samples += len(batch[-1]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or any(r["epoch"] == epoch for r in self.rows):
            return  # a restored epoch whose end Lightning replays after a restart
        elapsed = time.perf_counter() - self._t0
        self.samples_trained += self._samples
        m = trainer.callback_metrics
        row: dict[str, float] = {"epoch": epoch}
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            if key in m:
                row[key] = float(m[key])
        row["lr"] = self._lr
        row["grad_norm_max"] = float(getattr(pl_module, "grad_norm_max", 0.0))
        self.rows.append(row)
        if trainer.is_global_zero:  # one line an epoch, readable in logs without a bar
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            print(f"litpipe train: epoch {epoch + 1}/{trainer.max_epochs}: {shown}", flush=True)
        if self.run is not None and epoch > self.logged_upto:
            timing = {"epoch_time_s": elapsed,
                      "samples_per_s": self._samples / elapsed if elapsed > 0 else 0.0,
                      "cpu_threads": torch.get_num_threads()}
            self.run.log_metrics({**{k: v for k, v in row.items() if k != "epoch"},
                                  **timing}, step=epoch)
            self.logged_upto = epoch

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
        return buf.getvalue()


class CoreSharing(Callback):
    """Keeps this training's thread count at its share of the cores while it fits
    (:mod:`litpipe.cores`): counted again about once a second, at batch starts."""

    def __init__(self, share: CoreShare) -> None:
        self.share = share

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.share.apply()

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                  batch: Any, batch_idx: int, dataloader_idx: int = 0
                                  ) -> None:
        self.share.apply()


class ValidationImageLogger(Callback):
    """Pictures of what the model sees, per epoch, in MLflow.

    At the end of each validation epoch, a fixed set of validation images is run through
    the model and a grid (predicted vs true label, or input vs reconstruction) is logged to
    the run as ``val_predictions/epoch_NNN.png``: watching the same images get classified
    better, epoch after epoch, is often the quickest sanity check of a run.
    """

    def __init__(self, run: TrackedRun, samples: tuple[torch.Tensor, torch.Tensor],
                 classes: list[str], workdir: Path) -> None:
        self.run = run
        self.images, self.labels = samples
        self.classes = classes
        self.workdir = workdir

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule
                                ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        x = to_unit_range(self.images).to(pl_module.device)
        with torch.no_grad():
            out = pl_module(x).float().cpu()
        path = self.workdir / f"epoch_{trainer.current_epoch:03d}.png"
        title = f"Validation, epoch {trainer.current_epoch}"
        if out.shape == x.shape:
            reconstruction_pairs(self.images, out, path, title=title)
        else:
            conf, pred = torch.softmax(out, dim=1).max(dim=1)
            prediction_grid(self.images, self.labels.tolist(), pred.tolist(), conf.tolist(),
                            self.classes, path, title=title)
        self.run.log_artifact(path, "val_predictions")
