"""The train stage: Lightning Trainer + callbacks + MLflow run, outputs written atomically.

Checkpoints are written by ModelCheckpoint into a private temporary directory under
``models/`` and moved onto ``models/best.ckpt`` / ``models/last.ckpt`` only when training
finished, so a killed run never leaves a checkpoint that DVC or a user could mistake for a
finished one.
"""

from __future__ import annotations

import csv
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import MLFlowLogger

from litpipe.atomic import move_into_place, write_json, write_text
from litpipe.config import Params, flatten
from litpipe.datamodule import ArrayDataModule
from litpipe.lit_module import LitClassifier
from litpipe.tracking import (
    ensure_experiment,
    log_dataset_input,
    resolve_tracking_uri,
    run_tags,
)

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                  "epoch_time_s", "samples_per_s")


class EpochHistory(Callback):
    """Collects one row per epoch and logs it to MLflow with ``step = epoch``.

    Lightning's logger would plot epoch metrics against the global step; users comparing runs
    with different batch sizes want epochs on the x axis.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._t0 = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._samples = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._samples += len(batch[1])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        elapsed = time.perf_counter() - self._t0
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            if key in m:
                row[key] = float(m[key])
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row["epoch_time_s"] = elapsed
        row["samples_per_s"] = self._samples / elapsed if elapsed > 0 else 0.0
        self.rows.append(row)
        logger = trainer.logger
        if isinstance(logger, MLFlowLogger) and trainer.is_global_zero:
            metrics = {k: v for k, v in row.items() if k != "epoch"}
            for key, value in metrics.items():
                logger.experiment.log_metric(logger.run_id, key, value, step=row["epoch"])

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
        return buf.getvalue()


def progress_bar() -> TQDMProgressBar:
    """A tqdm bar (rich's bar prints nothing until the end when DVC pipes the output).

    When stderr is not a terminal (``dvc repro`` logs, CI), refresh rarely so the log shows
    steady progress lines instead of thousands of carriage returns.
    """
    return TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 50)


def build_module(params: Params, stats: dict[str, Any]) -> LitClassifier:
    """A fresh LightningModule sized for the data described by ``stats``."""
    return LitClassifier(
        model=params.model.model_dump(mode="json"),
        train=params.train.model_dump(mode="json"),
        in_shape=list(stats["shape"]),
        classes=list(stats["classes"]),
        mean=list(stats["mean"]),
        std=list(stats["std"]),
    )


def train_stage(params: Params, processed_dir: Path, models_dir: Path, reports_dir: Path
                ) -> dict[str, Any]:
    """Train, then write ``best.ckpt``, ``last.ckpt``, ``run.json`` and the history CSV."""
    cfg = params.train
    L.seed_everything(params.seed, workers=True)
    dm = ArrayDataModule(processed_dir, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                         seed=params.seed, augment=cfg.augment)
    module = build_module(params, dm.stats)

    uri = resolve_tracking_uri(params.tracking)
    ensure_experiment(uri, params.tracking.experiment)
    logger = MLFlowLogger(experiment_name=params.tracking.experiment, tracking_uri=uri,
                          tags=run_tags(dm.stats), log_model=False)

    models_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".train-", dir=models_dir))
    try:
        checkpoint = ModelCheckpoint(dirpath=work, filename="best", monitor=cfg.checkpoint.monitor,
                                     mode=cfg.checkpoint.mode, save_top_k=1, save_last=True)
        history = EpochHistory()
        callbacks: list[Callback] = [checkpoint, history]
        if cfg.progress_bar:
            callbacks.append(progress_bar())
        es = cfg.early_stopping
        if es.enabled:
            callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode,
                                           patience=es.patience, min_delta=es.min_delta))
        trainer = L.Trainer(
            max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices,
            precision=cfg.precision, deterministic=True, logger=logger, callbacks=callbacks,
            limit_train_batches=cfg.limit_train_batches, limit_val_batches=cfg.limit_val_batches,
            enable_progress_bar=cfg.progress_bar, enable_model_summary=True,
            default_root_dir=work, log_every_n_steps=10,
        )
        logger.log_hyperparams(flatten(params))
        log_dataset_input(logger.experiment, logger.run_id, dm.stats,
                          source=str(processed_dir.resolve()))
        trainer.fit(module, datamodule=dm)

        run_id = logger.run_id
        best = Path(checkpoint.best_model_path or checkpoint.last_model_path)
        summary = {
            "run_id": run_id,
            "experiment": params.tracking.experiment,
            "tracking_uri": uri,
            "best_score": float(checkpoint.best_model_score)
            if checkpoint.best_model_score is not None else None,
            "monitor": cfg.checkpoint.monitor,
            "epochs_run": len(history.rows),
        }
        client = logger.experiment
        for key in ("params.yaml", "dvc.yaml"):
            if Path(key).exists():
                client.log_artifact(run_id, key, artifact_path="config")
        if trainer.is_global_zero:
            write_text(reports_dir / "train_history.csv", history.to_csv())
            move_into_place(checkpoint.last_model_path, models_dir / "last.ckpt")
            if best.exists():
                move_into_place(best, models_dir / "best.ckpt")
            else:  # best was the last one and has just been moved
                shutil.copyfile(models_dir / "last.ckpt", models_dir / "best.ckpt")
            write_json(models_dir / "run.json", summary)
            client.log_artifact(run_id, str(models_dir / "best.ckpt"), artifact_path="checkpoint")
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_checkpoint_module(path: Path, map_location: str = "cpu") -> LitClassifier:
    """Rebuild the LightningModule from a checkpoint without unpickling arbitrary objects."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    hp = ckpt["hyper_parameters"]
    module = LitClassifier(**{k: hp[k] for k in
                              ("model", "train", "in_shape", "classes", "mean", "std")})
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    return module
