"""The train stage: Lightning Trainer + callbacks + MLflow run, outputs written atomically.

Checkpoints are written by ModelCheckpoint into a private temporary directory under
``models/`` and moved onto ``models/best.ckpt`` / ``models/last.ckpt`` only when training
finished, so a killed run never leaves a checkpoint that DVC or a user could mistake for a
finished one. Only global rank 0 writes outputs or talks to MLflow (DDP runs N processes).
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
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    StochasticWeightAveraging,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from litpipe.atomic import move_into_place, write_json, write_text
from litpipe.config import Params, flatten
from litpipe.datamodule import ArrayDataModule
from litpipe.lit_module import LitBase, module_class
from litpipe.tracking import (
    ensure_experiment,
    log_dataset_input,
    log_params,
    resolve_tracking_uri,
    run_tags,
)

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                  "grad_norm_max", "epoch_time_s", "samples_per_s")


class EpochHistory(Callback):
    """Collects one row per epoch and logs it to MLflow with ``step = epoch``.

    Lightning's logger would plot epoch metrics against the global step; users comparing runs
    with different batch sizes want epochs on the x axis. Holding the logger itself (not
    ``trainer.logger``) keeps logging alive under ``fast_dev_run``, which swaps loggers out.
    """

    def __init__(self, logger: MLFlowLogger | None) -> None:
        self.logger = logger
        self.rows: list[dict[str, float]] = []
        self._t0 = 0.0
        self._samples = 0
        self._lr = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._samples = 0
        # The rate this epoch trains with (epoch-interval schedulers step at its end).
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._samples += len(batch[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        elapsed = time.perf_counter() - self._t0
        m = trainer.callback_metrics
        row: dict[str, float] = {"epoch": trainer.current_epoch}
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            if key in m:
                row[key] = float(m[key])
        row["lr"] = self._lr
        row["grad_norm_max"] = float(getattr(pl_module, "grad_norm_max", 0.0))
        row["epoch_time_s"] = elapsed
        row["samples_per_s"] = self._samples / elapsed if elapsed > 0 else 0.0
        self.rows.append(row)
        if self.logger is not None and trainer.is_global_zero:
            client, run_id = self.logger.experiment, self.logger.run_id
            for key, value in row.items():
                if key != "epoch":
                    client.log_metric(run_id, key, value, step=int(row["epoch"]))

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
        return buf.getvalue()


class ValidationImageLogger(Callback):
    """The CIFAR-10 seed's image prediction logger, for MLflow.

    At the end of each validation epoch, a fixed set of validation images is run through
    the model and a grid (predicted vs true label, or input vs reconstruction) is logged to
    the run as ``val_predictions/epoch_NNN.png``.
    """

    def __init__(self, logger: MLFlowLogger, samples: tuple[torch.Tensor, torch.Tensor],
                 classes: list[str], workdir: Path) -> None:
        self.logger = logger
        self.images, self.labels = samples
        self.classes = classes
        self.workdir = workdir

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule
                                ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        from litpipe.plots import reconstruction_grid, sample_grid

        x = self.images.float().div(255.0).to(pl_module.device)
        with torch.no_grad():
            out = pl_module(x).float().cpu()
        path = self.workdir / f"epoch_{trainer.current_epoch:03d}.png"
        title = f"Validation, epoch {trainer.current_epoch}"
        if out.shape == x.shape:
            reconstruction_grid(self.images.numpy(), out.numpy(), path, title=title)
        else:
            probs = torch.softmax(out, dim=1)
            conf, pred = probs.max(dim=1)
            sample_grid(self.images.numpy(), self.labels.tolist(), pred.tolist(),
                        self.classes, path, probs=conf.tolist(), title=title)
        self.logger.experiment.log_artifact(self.logger.run_id, str(path),
                                            artifact_path="val_predictions")


def run_name(params: Params) -> str:
    """A readable, unique run name: the DVC experiment's name when there is one.

    MLflow's own random names come from Python's ``random``, which ``seed_everything`` has
    just seeded: every run would be called the same.
    """
    import os
    import uuid

    head = os.environ.get("DVC_EXP_NAME") or f"{params.model.name}-{params.data.dataset}"
    return f"{head}-{uuid.uuid4().hex[:6]}"


def progress_bar() -> TQDMProgressBar:
    """A tqdm bar (rich's bar prints nothing until the end when DVC pipes the output).

    When stderr is not a terminal (``dvc repro`` logs, CI), refresh rarely so the log shows
    steady progress lines instead of thousands of carriage returns.
    """
    return TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 50)


def build_module(params: Params, stats: dict[str, Any]) -> LitBase:
    """A fresh LightningModule of the kind ``model.name`` asks for, sized by ``stats``."""
    cls = module_class(params.model.name)
    return cls(
        model=params.model.model_dump(mode="json"),
        train=params.train.model_dump(mode="json"),
        in_shape=list(stats["shape"]),
        classes=list(stats["classes"]),
        mean=list(stats["mean"]),
        std=list(stats["std"]),
    )


def _profiler(kind: str, workdir: Path) -> Any:
    if kind == "none":
        return None
    from lightning.pytorch.profilers import AdvancedProfiler, SimpleProfiler

    cls = SimpleProfiler if kind == "simple" else AdvancedProfiler
    return cls(dirpath=workdir, filename="profile")


def _tune(params: Params, trainer: L.Trainer, module: LitBase, dm: ArrayDataModule,
          workdir: Path) -> dict[str, Any]:
    """Run Lightning's finders for ``lr: auto`` / ``batch_size: auto``; return what they chose.

    The batch size is tuned first (the best learning rate depends on it), as Lightning's docs
    recommend.
    """
    from lightning.pytorch.tuner import Tuner

    cfg = params.train
    tuner = Tuner(trainer)
    result: dict[str, Any] = {"lr": module.lr, "batch_size": dm.batch_size,
                              "lr_tuned": cfg.lr == "auto",
                              "batch_size_tuned": cfg.batch_size == "auto"}
    if cfg.batch_size == "auto":
        dm.setup("fit")
        found = tuner.scale_batch_size(module, datamodule=dm, mode="power",
                                       steps_per_trial=cfg.tuner.steps_per_trial, init_val=16,
                                       max_val=min(cfg.tuner.max_batch_size,
                                                   len(dm.datasets["train"])))
        result["batch_size"] = int(found or dm.batch_size)
        dm.batch_size = result["batch_size"]
    if cfg.lr == "auto":
        finder = tuner.lr_find(module, datamodule=dm, min_lr=cfg.tuner.min_lr,
                               max_lr=cfg.tuner.max_lr, num_training=cfg.tuner.num_training)
        suggestion = finder.suggestion() if finder is not None else None
        if suggestion is None:
            raise RuntimeError("Lightning's learning-rate finder found no suggestion; set "
                               "train.lr to a number or widen train.tuner.min_lr/max_lr")
        module.lr = float(suggestion)
        result["lr"] = module.lr
        import matplotlib

        matplotlib.use("Agg")
        fig = finder.plot(suggest=True)
        fig.savefig(workdir / "lr_finder.png", dpi=100, bbox_inches="tight")
        result["lr_finder"] = {"min_lr": cfg.tuner.min_lr, "max_lr": cfg.tuner.max_lr,
                               "num_training": cfg.tuner.num_training}
    return result


def train_stage(params: Params, processed_dir: Path, models_dir: Path, reports_dir: Path
                ) -> dict[str, Any]:
    """Train; write ``best.ckpt``, ``last.ckpt``, ``run.json``, history and tuning reports."""
    cfg = params.train
    L.seed_everything(params.seed, workers=True)
    if cfg.resume_from and not Path(cfg.resume_from).is_file():
        raise FileNotFoundError(f"train.resume_from = {cfg.resume_from!r}: no such checkpoint")
    batch_size = 64 if cfg.batch_size == "auto" else cfg.batch_size
    dm = ArrayDataModule(processed_dir, batch_size=batch_size, num_workers=cfg.num_workers,
                         seed=params.seed, augment=cfg.augment)
    module = build_module(params, dm.stats)

    uri = resolve_tracking_uri(params.tracking)
    if rank_zero_only.rank == 0:
        ensure_experiment(uri, params.tracking.experiment)
    logger = MLFlowLogger(experiment_name=params.tracking.experiment, tracking_uri=uri,
                          run_name=run_name(params), tags=run_tags(dm.stats), log_model=False)

    models_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".train-", dir=models_dir))
    try:
        checkpoint = ModelCheckpoint(dirpath=work, filename="best", monitor=cfg.checkpoint.monitor,
                                     mode=cfg.checkpoint.mode, save_top_k=1, save_last=False)
        history = EpochHistory(logger)
        callbacks: list[Callback] = [checkpoint, history]
        if cfg.progress_bar:
            callbacks.append(progress_bar())
        es = cfg.early_stopping
        if es.enabled:
            callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode,
                                           patience=es.patience, min_delta=es.min_delta))
        if cfg.swa.enabled:
            callbacks.append(StochasticWeightAveraging(
                swa_lrs=cfg.swa.lrs, swa_epoch_start=cfg.swa.epoch_start,
                annealing_epochs=cfg.swa.annealing_epochs))
        if cfg.val_image_samples:
            dm.setup("validate")
            val = dm.datasets["val"].tensors
            n = min(cfg.val_image_samples, len(val[1]))
            callbacks.append(ValidationImageLogger(logger, (val[0][:n], val[1][:n]),
                                                   dm.stats["classes"], work))
        trainer = L.Trainer(
            max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices,
            strategy=cfg.strategy, precision=cfg.precision, deterministic=True, logger=logger,
            callbacks=callbacks, limit_train_batches=cfg.limit_train_batches,
            limit_val_batches=cfg.limit_val_batches, fast_dev_run=cfg.fast_dev_run,
            accumulate_grad_batches=cfg.accumulate_grad_batches,
            gradient_clip_val=cfg.gradient_clip_val,
            gradient_clip_algorithm=cfg.gradient_clip_algorithm if cfg.gradient_clip_val
            else None,
            profiler=_profiler(cfg.profiler, work), enable_progress_bar=cfg.progress_bar,
            enable_model_summary=True, default_root_dir=work, log_every_n_steps=10,
        )
        if trainer.is_global_zero:
            log_params(logger.experiment, logger.run_id, flatten(params))
            log_dataset_input(logger.experiment, logger.run_id, dm.stats,
                              source=str(processed_dir.resolve()))
        tuning = _tune(params, trainer, module, dm, work)
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume_from, weights_only=True)
        # The model as training left it (SWA-averaged if enabled): models/last.ckpt, and
        # resumable. Every rank must call save_checkpoint (it synchronises); rank 0 writes.
        trainer.save_checkpoint(work / "final.ckpt")
        if not trainer.is_global_zero:
            return {"rank": trainer.global_rank}
        return _finish(params, trainer, logger, checkpoint, history, tuning, work, uri,
                       models_dir, reports_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finish(params: Params, trainer: L.Trainer, logger: MLFlowLogger,
            checkpoint: ModelCheckpoint, history: EpochHistory, tuning: dict[str, Any],
            work: Path, uri: str, models_dir: Path, reports_dir: Path) -> dict[str, Any]:
    """Rank 0 after ``fit``: choose the checkpoints, write outputs, log artifacts."""
    cfg = params.train
    client, run_id = logger.experiment, logger.run_id
    last = work / "final.ckpt"
    if cfg.swa.enabled or not checkpoint.best_model_path:
        best, best_from = last, ("swa" if cfg.swa.enabled else "final")
    else:
        best, best_from = Path(checkpoint.best_model_path), cfg.checkpoint.monitor
    summary = {
        "run_id": run_id,
        "experiment": params.tracking.experiment,
        "tracking_uri": uri,
        "best_from": best_from,
        "best_score": float(checkpoint.best_model_score)
        if checkpoint.best_model_score is not None else None,
        "epochs_run": len(history.rows),
        "optimizer_steps": int(trainer.global_step),
        "world_size": int(trainer.world_size),
        "resumed_from": cfg.resume_from,
    }
    tuning = {**tuning, "lr": float(tuning["lr"]), "batch_size": int(tuning["batch_size"])}
    client.log_metric(run_id, "optimizer_steps", trainer.global_step)
    if tuning["lr_tuned"]:
        client.log_param(run_id, "tuned.lr", tuning["lr"])
    if tuning["batch_size_tuned"]:
        client.log_param(run_id, "tuned.batch_size", tuning["batch_size"])
    for key in ("params.yaml", "dvc.yaml"):
        if Path(key).exists():
            client.log_artifact(run_id, key, artifact_path="config")
    for extra in ("lr_finder.png", "fit-profile.txt", "profile.txt"):
        if (work / extra).exists():
            client.log_artifact(run_id, str(work / extra), artifact_path="train")

    write_text(reports_dir / "train_history.csv", history.to_csv())
    write_json(reports_dir / "tuning.json", tuning)
    move_into_place(best, models_dir / "best.ckpt")
    if last.exists():
        move_into_place(last, models_dir / "last.ckpt")
    else:  # best was the final checkpoint and has just been moved
        shutil.copyfile(models_dir / "best.ckpt", models_dir / "last.ckpt")
    write_json(models_dir / "run.json", summary)
    client.log_artifact(run_id, str(models_dir / "best.ckpt"), artifact_path="checkpoint")
    return summary


def load_checkpoint_module(path: Path, map_location: str = "cpu") -> LitBase:
    """Rebuild the LightningModule from a checkpoint without unpickling arbitrary objects."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    hp = ckpt["hyper_parameters"]
    cls = module_class(hp["model"]["name"])
    module = cls(**{k: hp[k] for k in ("model", "train", "in_shape", "classes", "mean", "std")})
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    return module
