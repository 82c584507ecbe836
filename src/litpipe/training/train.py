"""The train stage: a Lightning Trainer with litpipe's callbacks, tracked as one MLflow run.

Checkpoints are written by ModelCheckpoint into a private temporary directory under
``models/`` and moved onto ``models/best.ckpt`` / ``models/last.ckpt`` only when training
finished, so a killed run never leaves a checkpoint that DVC or a user could mistake for a
finished one. Only global rank 0 writes outputs or talks to MLflow (DDP runs N processes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    StochasticWeightAveraging,
)
from lightning.pytorch.utilities import rank_zero_only

from litpipe.atomic import move_into_place, write_json, write_text
from litpipe.config import Params
from litpipe.data.datamodule import ArrayDataModule
from litpipe.model.module import build_module
from litpipe.model.progress import progress_bar
from litpipe.repo import MODELS, PROCESSED, REPORTS
from litpipe.tracking import TrackedRun, check_reachable, resolve_tracking_uri, run_tags
from litpipe.training.callbacks import EpochHistory, ValidationImageLogger
from litpipe.training.tuning import tune

# The batch size the batch-size finder starts from when data.batch_size is auto.
BATCH_SIZE_BEFORE_TUNING = 64


def run_name(params: Params) -> str:
    """A readable, unique run name: the DVC experiment's name when there is one.

    MLflow's own random names come from Python's ``random``, which ``seed_everything`` has
    just seeded: every run would be called the same.
    """
    head = os.environ.get("DVC_EXP_NAME") or f"{params.model.name}-{params.data.dataset}"
    return f"{head}-{uuid.uuid4().hex[:6]}"


def _callbacks(params: Params, dm: ArrayDataModule, run: TrackedRun | None, work: Path
               ) -> tuple[ModelCheckpoint, EpochHistory, list[Callback]]:
    """ModelCheckpoint and the history (read after fit), and every callback for the Trainer."""
    cb = params.callbacks
    checkpoint = ModelCheckpoint(dirpath=work, filename="best", monitor=cb.checkpoint.monitor,
                                 mode=cb.checkpoint.mode, save_top_k=1, save_last=False)
    history = EpochHistory(run)
    callbacks: list[Callback] = [checkpoint, history]
    if params.trainer.enable_progress_bar:
        callbacks.append(progress_bar())
    es = cb.early_stopping
    if es.enabled:
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience,
                                       min_delta=es.min_delta))
    if cb.swa.enabled:
        callbacks.append(StochasticWeightAveraging(
            swa_lrs=cb.swa.lrs, swa_epoch_start=cb.swa.epoch_start,
            annealing_epochs=cb.swa.annealing_epochs))
    if cb.val_image_samples and run is not None:
        dm.setup("validate")
        images, labels = dm.datasets["val"].tensors
        n = min(cb.val_image_samples, len(labels))
        callbacks.append(ValidationImageLogger(run, (images[:n], labels[:n]),
                                               dm.stats["classes"], work))
    return checkpoint, history, callbacks


def _profiler(kind: str, workdir: Path) -> Any:
    """Lightning's profiler, writing its report to a file (logged to MLflow), or None."""
    if kind == "none":
        return None
    from lightning.pytorch.profilers import AdvancedProfiler, SimpleProfiler

    cls = SimpleProfiler if kind == "simple" else AdvancedProfiler
    return cls(dirpath=workdir, filename="profile")


def build_trainer(params: Params, callbacks: list[Callback], work: Path) -> L.Trainer:
    """``lightning.Trainer(**params.trainer)``, deterministic, with litpipe's callbacks."""
    cfg = params.trainer
    kwargs = cfg.model_dump(exclude={"profiler"})
    if cfg.gradient_clip_val is None:  # Lightning refuses an algorithm without a value
        kwargs["gradient_clip_algorithm"] = None
    return L.Trainer(**kwargs, profiler=_profiler(cfg.profiler, work), deterministic=True,
                     logger=False, callbacks=callbacks, enable_model_summary=True,
                     default_root_dir=work)


def train(params: Params, processed_dir: Path = PROCESSED, models_dir: Path = MODELS,
          reports_dir: Path = REPORTS) -> dict[str, Any]:
    """Train; write ``best.ckpt``, ``last.ckpt``, ``run.json``, history and tuning reports."""
    uri = resolve_tracking_uri(params.tracking)
    check_reachable(uri)  # before any training: an unreachable server would lose the run
    L.seed_everything(params.seed, workers=True)
    batch = params.data.batch_size
    dm = ArrayDataModule(processed_dir, seed=params.seed, num_workers=params.data.num_workers,
                         augment=params.data.augment,
                         batch_size=BATCH_SIZE_BEFORE_TUNING if batch == "auto" else batch)
    module = build_module(params, dm.stats)
    run = None
    if rank_zero_only.rank == 0:
        run = TrackedRun.start(uri, params.tracking.experiment, run_name(params),
                               run_tags(dm.stats))
    models_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".train-", dir=models_dir))
    try:
        checkpoint, history, callbacks = _callbacks(params, dm, run, work)
        trainer = build_trainer(params, callbacks, work)
        if run is not None:
            run.log_params(params)
            run.log_dataset(dm.stats, source=str(processed_dir.resolve()))
        tuning = tune(params, trainer, module, dm, work)
        trainer.fit(module, datamodule=dm)
        # The model as training left it (SWA-averaged if enabled): models/last.ckpt, and
        # resumable. Every rank must call save_checkpoint (it synchronises); rank 0 writes.
        trainer.save_checkpoint(work / "final.ckpt")
        if run is None:
            return {"rank": trainer.global_rank}
        summary = _finish(params, trainer, run, checkpoint, history, tuning, work,
                          models_dir, reports_dir)
        run.finish("FINISHED")
        return summary
    except BaseException:
        if run is not None:
            run.finish("FAILED")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finish(params: Params, trainer: L.Trainer, run: TrackedRun, checkpoint: ModelCheckpoint,
            history: EpochHistory, tuning: dict[str, Any], work: Path, models_dir: Path,
            reports_dir: Path) -> dict[str, Any]:
    """Rank 0 after ``fit``: choose the checkpoints, write outputs, log artifacts."""
    last = work / "final.ckpt"
    swa = params.callbacks.swa.enabled
    if swa or not checkpoint.best_model_path:
        best, best_from = last, ("swa" if swa else "final")
    else:
        best, best_from = Path(checkpoint.best_model_path), params.callbacks.checkpoint.monitor
    summary = {
        "run_id": run.run_id,
        "experiment": params.tracking.experiment,
        "tracking_uri": run.uri,
        "best_from": best_from,
        "best_score": float(checkpoint.best_model_score)
        if checkpoint.best_model_score is not None else None,
        "epochs_run": len(history.rows),
        "optimizer_steps": int(trainer.global_step),
        "world_size": int(trainer.world_size),
    }
    tuning = {**tuning, "lr": float(tuning["lr"]), "batch_size": int(tuning["batch_size"])}
    run.log_metrics({"optimizer_steps": trainer.global_step})
    tuned = {f"tuned.{k}": str(tuning[k]) for k in ("lr", "batch_size") if tuning[f"{k}_tuned"]}
    if tuned:
        run.log_values(tuned)
    for key in ("params.yaml", "dvc.yaml"):
        if Path(key).exists():
            run.log_artifact(Path(key), "config")
    for extra in ("lr_finder.png", "fit-profile.txt", "profile.txt"):
        if (work / extra).exists():
            run.log_artifact(work / extra, "train")

    write_text(reports_dir / "train_history.csv", history.to_csv())
    write_json(reports_dir / "tuning.json", tuning)
    move_into_place(best, models_dir / "best.ckpt")
    if last.exists():
        move_into_place(last, models_dir / "last.ckpt")
    else:  # best was the final checkpoint and has just been moved
        shutil.copyfile(models_dir / "best.ckpt", models_dir / "last.ckpt")
    write_json(models_dir / "run.json", summary)
    run.log_artifact(models_dir / "best.ckpt", "checkpoint")
    return summary
