"""The train stage: a Lightning Trainer with litpipe's callbacks, tracked as one MLflow run.

Nothing trained is lost (:mod:`litpipe.training.resume`): every completed epoch is
checkpointed in the resume directory, a rerun after a kill continues from there into the
same MLflow run, and a failure after training (tracking outage, full disk) keeps the trained
model there so the rerun only writes the outputs. ``models/`` is written last, from the
resume directory, so a killed run never leaves a checkpoint that DVC or a user could take
for a finished one. Only global rank 0 writes outputs or talks to MLflow (DDP runs N
processes).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    StochasticWeightAveraging,
)
from lightning.pytorch.utilities import rank_zero_only

from litpipe.atomic import write_json, write_text
from litpipe.catalog import NETWORKS
from litpipe.cores import CoreShare
from litpipe.data.datamodule import ArrayDataModule
from litpipe.data.processed import load_stats
from litpipe.errors import LitpipeError
from litpipe.model.module import build_module
from litpipe.repo import MODELS, PROCESSED, REPORTS
from litpipe.schema import Params
from litpipe.sweep.trial import TrialContext, TrialPruning
from litpipe.tracking.client import TrackingError
from litpipe.tracking.resources import log_stage_seconds, system_metrics
from litpipe.tracking.run import TrackedRun
from litpipe.tracking.store import check_store, resolve_tracking_uri
from litpipe.tracking.tags import run_tags
from litpipe.training.callbacks import (
    CoreSharing,
    EpochHistory,
    EpochSeeding,
    HoldAtEpoch,
    ModelCheckpoint,
    NonFiniteStop,
    ValidationImageLogger,
)
from litpipe.training.device import (
    resolve_precision,
    skip_cuda_probes,
)
from litpipe.training.flops import training_flops_per_sample
from litpipe.training.resume import (
    ResumeDir,
    export_checkpoint,
    fingerprint,
)
from litpipe.training.trainer import build_trainer
from litpipe.training.tuning import BATCH_SIZE_BEFORE_TUNING, LR_BEFORE_TUNING, tune

# The run's tag naming its resume directory: how a run whose run file was damaged is found.
FINGERPRINT_TAG = "litpipe.resume_fingerprint"
# Validation batches: a constant, so the train stage depends on no evaluate param. 250, not
# larger: the default CNN's forward pass per image took twice as long at 1000 (cache misses).
VAL_BATCH_SIZE = 250
RETRY_WAIT_S = 120.0  # a dead worker's training stops at its next batch (sweep/trial.py)


class OutputError(LitpipeError):
    """An output could not be written (full disk, permissions); the model is kept."""


def run_name(params: Params) -> str:
    """A readable, unique run name: the DVC experiment's name when there is one.

    MLflow's own random names come from Python's ``random``, which ``seed_everything`` has
    just seeded: every run would be called the same.
    """
    head = os.environ.get("DVC_EXP_NAME") or f"{params.model.name}-{params.data.dataset}"
    return f"{head}-{uuid.uuid4().hex[:6]}"


def datamodule(params: Params, processed_dir: Path, batch_size: int) -> ArrayDataModule:
    """The DataModule the train stage trains with, at ``batch_size`` (``data.batch_size``,
    or the finder's choice when that is auto)."""
    return ArrayDataModule(processed_dir, batch_size=batch_size, seed=params.seed,
                           num_workers=params.data.num_workers, augment=params.data.augment,
                           max_shift=params.data.max_shift,
                           channels_last=params.model.channels_last
                           and NETWORKS[params.model.name].convolutional,
                           eval_batch_size=VAL_BATCH_SIZE)


def _callbacks(params: Params, dm: ArrayDataModule, run: TrackedRun | None,
               resume: ResumeDir, share: CoreShare, logged_upto: int
               ) -> tuple[ModelCheckpoint, EpochHistory, list[Callback]]:
    """ModelCheckpoint and the history (read after fit), and every callback for the Trainer.

    Two ModelCheckpoints write into the resume directory: ``best.ckpt`` by the monitored
    metric, and ``last.ckpt`` at the end of every epoch, which a rerun resumes from.
    ``save_last=True`` cannot be the second: since Lightning 2.6 it writes ``last.ckpt``
    only at the epochs that also wrote a top-k checkpoint, so a kill after an epoch that did
    not improve the metric would lose that epoch. The "last" callback comes second, so its
    file also holds the "best" callback's state of the same epoch.
    """
    cb = params.callbacks
    checkpoint = ModelCheckpoint(dirpath=resume.checkpoints, filename="best",
                                 monitor=cb.checkpoint.monitor, mode=cb.checkpoint.mode,
                                 save_top_k=1, save_on_train_epoch_end=True)
    every_epoch = ModelCheckpoint(dirpath=resume.checkpoints, filename=resume.last.stem,
                                  monitor=None, save_top_k=1, save_on_train_epoch_end=True,
                                  enable_version_counter=False)
    history = EpochHistory(run, logged_upto)
    callbacks: list[Callback] = [EpochSeeding(params.seed), checkpoint, every_epoch,
                                 history, CoreSharing(share)]
    if cb.stop_on_non_finite:
        callbacks.append(NonFiniteStop())
    hold = HoldAtEpoch.from_env()  # tests only (training/callbacks.py says why)
    if hold is not None:
        callbacks.append(hold)
    trial = TrialContext.from_env()  # set by `litpipe sweep` only (sweep/trial.py)
    if trial is not None:
        callbacks.append(TrialPruning(trial))
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
        (resume.path / "val_predictions").mkdir(exist_ok=True)
        callbacks.append(ValidationImageLogger(run, (images[:n], labels[:n]),
                                               dm.stats["classes"],
                                               resume.path / "val_predictions"))
    return checkpoint, history, callbacks


def _open_run(params: Params, resume: ResumeDir, uri: str, stats: dict[str, Any],
              processed_dir: Path, share: CoreShare) -> TrackedRun:
    """The MLflow run of this training: the interrupted one, continued, or a new one."""
    info = resume.run_info()
    trial = TrialContext.from_env()
    if info is not None and info.get("tracking_uri") == uri:
        run = TrackedRun(uri, info["run_id"], outbox=resume.outbox)
        run.flush()
        run.set_status("RUNNING")
        if trial is not None:  # a sweep's retry of a dead worker's trial: now this trial's
            run.set_tags(trial.run_tags())
        print(f"litpipe train: resuming MLflow run {run.run_id} from {resume.path}")
        return run
    # What this machine made of machine-dependent settings: results differ across CPU kinds.
    machine = {"precision": resolve_precision(params.trainer.precision,
                                              params.trainer.accelerator),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "cpu_cores": share.cores, "threads": share.threads,
               "threads_fixed_by_user": str(share.fixed_by_user).lower()}
    tags = {**run_tags(stats), **{f"litpipe.{k}": str(v) for k, v in machine.items()},
            FINGERPRINT_TAG: resume.path.name, **(trial.run_tags() if trial else {})}
    run = TrackedRun.start(uri, params.tracking.experiment, run_name(params), tags,
                           outbox=resume.outbox)
    resume.save_run_info(uri, run.run_id)
    run.log_params(params)
    run.log_dataset(stats, source=str(processed_dir.resolve()))
    return run


def _tuned(params: Params, processed_dir: Path, stats: dict[str, Any], resume: ResumeDir
           ) -> dict[str, Any]:
    """The learning rate and batch size to train with (``models/tuning.json``): the params'
    values, or the finders' choices when those are auto, found once and reused on resume.

    The finders search with throwaway objects and a Trainer of their own, without litpipe's
    callbacks: their trial steps must not write checkpoints into the resume directory or log
    epochs.
    """
    tuning = resume.tuning()
    if tuning is not None:
        return tuning
    lr, batch = params.optimizer.lr, params.data.batch_size
    find_lr, find_batch = lr == "auto", batch == "auto"
    if find_lr or find_batch:
        L.seed_everything(params.seed, workers=True)
        tuning = tune(params.tuner, build_trainer(params, [], resume.path),
                      build_module(params, stats, LR_BEFORE_TUNING if find_lr else lr),
                      datamodule(params, processed_dir,
                                 BATCH_SIZE_BEFORE_TUNING if find_batch else batch),
                      find_lr, find_batch, resume.path)
    else:
        tuning = {"lr": float(lr), "batch_size": int(batch), "lr_tuned": False,
                  "batch_size_tuned": False}
    if rank_zero_only.rank == 0:
        resume.save_tuning(tuning)
    return tuning


def _fit(params: Params, processed_dir: Path, stats: dict[str, Any], run: TrackedRun | None,
         resume: ResumeDir, share: CoreShare) -> dict[str, Any] | None:
    """Train (or continue training); return the facts the outputs need (rank 0 only).

    One way through: the learning rate and batch size are decided first, then the
    DataModule, the LightningModule, the callbacks and the Trainer are each built once
    with their final arguments.
    """
    tuning = _tuned(params, processed_dir, stats, resume)
    # The initial weights are drawn here, from the seed, whatever the finders drew.
    L.seed_everything(params.seed, workers=True)
    dm = datamodule(params, processed_dir, tuning["batch_size"])
    module = build_module(params, stats, tuning["lr"])
    # Every rank must load the same checkpoint; across machines each has its own resume
    # directory, so a multi-node run does not resume (it starts again from epoch 0).
    ckpt_path = resume.checkpoint_to_resume() if params.trainer.num_nodes == 1 else None
    logged_upto = -1
    if ckpt_path is not None:
        if run is not None:
            logged_upto = run.last_logged_step("train_loss")
        done = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)["epoch"]
        print(f"litpipe train: continuing from {ckpt_path} (epoch {done + 1} of "
              f"{params.trainer.max_epochs} done)")
    checkpoint, history, callbacks = _callbacks(params, dm, run, resume, share, logged_upto)
    trainer = build_trainer(params, callbacks, resume.path,
                            run_name=run.run_id if run is not None else "litpipe",
                            verified=True)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into sys.exit(1)
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    # Every rank must call save_checkpoint (it synchronises); rank 0 writes. The full state
    # (optimizer, loops) is saved, as Lightning's default; saying so keeps Lightning from
    # printing "`weights_only` was not set, defaulting to `False`", which reads like an
    # unsafe load (every load of it is weights_only=True).
    trainer.save_checkpoint(resume.final, weights_only=False)
    if not trainer.is_global_zero:
        return None
    swa = params.callbacks.swa.enabled
    use_final = swa or not checkpoint.best_model_path
    facts = {
        "best": str((resume.final if use_final else Path(checkpoint.best_model_path))
                    .relative_to(resume.path)),
        "best_from": ("swa" if swa else "final") if use_final
        else params.callbacks.checkpoint.monitor,
        "best_score": float(checkpoint.best_model_score)
        if checkpoint.best_model_score is not None else None,
        "epochs_run": len(history.rows),
        "optimizer_steps": int(trainer.global_step),
        # The recipe's cost whatever the machine (training/flops.py): every trained image's
        # forward and backward, not the validation passes.
        "train_flops": history.samples_trained * training_flops_per_sample(
            module.net, tuple(dm.stats["shape"]),
            None if module.task == "reconstruction" else len(module.classes)),
        "world_size": int(trainer.world_size),
        "history_csv": history.to_csv(),
        "tuning": tuning,
    }
    pruned = [cb.pruned_epoch for cb in callbacks
              if isinstance(cb, TrialPruning) and cb.pruned_epoch is not None]
    if pruned:  # said in models/run.json: this model stopped early because a sweep pruned it
        facts["pruned_at_epoch"] = pruned[0]
    resume.save_finished(facts)
    return facts


def train(params: Params, processed_dir: Path = PROCESSED, models_dir: Path = MODELS,
          reports_dir: Path = REPORTS, started: float | None = None) -> dict[str, Any]:
    """Train; write ``best.ckpt``, ``last.ckpt``, ``run.json``, ``tuning.json`` into
    ``models_dir`` and the per-epoch history into ``reports_dir``. ``started``: the stage's
    ``time.perf_counter()`` at its start (its wall time goes to MLflow); by default, now."""
    started = time.perf_counter() if started is None else started
    uri = resolve_tracking_uri(params.tracking)
    if rank_zero_only.rank == 0:  # only rank 0 talks to MLflow
        check_store(uri)  # before any training (a no-op when the stage entry checked it)
    skip_cuda_probes()
    stats = load_stats(processed_dir)
    fp = fingerprint(params, uri, processed_dir / "stats.json")
    with CoreShare() as share:
        if rank_zero_only.rank != 0:  # only rank 0 talks to MLflow and writes outputs
            _fit(params, processed_dir, stats, None, ResumeDir.peek(fp), share)
            return {"rank": rank_zero_only.rank}
        return _train_rank_zero(params, processed_dir, stats, fp, uri, share, models_dir,
                                reports_dir, started)


def _train_rank_zero(params: Params, processed_dir: Path, stats: dict[str, Any], fp: str,
                     uri: str, share: CoreShare, models_dir: Path,
                     reports_dir: Path, started: float) -> dict[str, Any]:
    """Rank 0's part of :func:`train`: the MLflow run, training, and the outputs."""
    # A sweep trial waits for a dead worker's training of the same params to stop.
    resume = ResumeDir.open(fp, wait_s=RETRY_WAIT_S if TrialContext.from_env() else 0.0)
    run: TrackedRun | None = None
    try:
        problem = resume.damaged()
        if problem is not None:
            _start_over(params, resume, uri, problem)
        run = _open_run(params, resume, uri, stats, processed_dir, share)
        facts = resume.finished()
        if facts is None:
            with system_metrics(run):  # CPU, memory... on the run while it trains
                facts = _fit(params, processed_dir, stats, run, resume, share)
            assert facts is not None
        else:
            print(f"litpipe train: training had finished ({resume.path}); writing outputs")
        summary = _finish(params, run, resume, facts, models_dir, reports_dir)
        log_stage_seconds(run, "train", started)  # this invocation's; MLflow only
        if not run.flush():
            raise TrackingError(
                f"MLflow tracking server {uri} is still unreachable; training finished and is "
                f"kept in {resume.path} with the run's queued metrics. Run `dvc repro` again "
                "when the server is back: it sends them and writes the outputs without "
                "training again")
        run.set_status("FINISHED")
        resume.remove()
        return summary
    except KeyboardInterrupt:
        if run is not None:
            run.set_status("KILLED")
        raise
    except TrackingError:
        raise  # the run stays open: the next `dvc repro` completes it
    except BaseException:
        if run is not None:
            run.set_status("FAILED")
        raise
    finally:
        resume.release()


def _start_over(params: Params, resume: ResumeDir, uri: str, problem: str) -> None:
    """Damaged resume state: close the interrupted run as FAILED (found by its run file, or
    by its fingerprint tag when that file is what was damaged) and forget the state, so
    training starts over in a new run that will hold every epoch."""
    print(f"litpipe train: {problem}; starting over in a new MLflow run", file=sys.stderr)
    info = resume.run_info()
    ids = {info["run_id"]} if info is not None and info.get("tracking_uri") == uri else set()
    ids |= set(TrackedRun.unfinished_ids(uri, params.tracking.experiment, FINGERPRINT_TAG,
                                      resume.path.name))
    for run_id in sorted(ids):
        TrackedRun(uri, run_id).set_status("FAILED")
    resume.reset()


def _finish(params: Params, run: TrackedRun, resume: ResumeDir, facts: dict[str, Any],
            models_dir: Path, reports_dir: Path) -> dict[str, Any]:
    """Rank 0 after training: write the outputs from the resume directory, log artifacts."""
    summary = {
        "run_id": run.run_id,
        "experiment": params.tracking.experiment,
        "tracking_uri": run.uri,
        **{k: facts[k] for k in ("best_from", "best_score", "epochs_run", "optimizer_steps",
                                 "world_size")},
        **{k: facts[k] for k in ("pruned_at_epoch",) if k in facts},
        "train_tflop": round(facts["train_flops"] / 1e12, 3),
    }
    tuning = facts["tuning"]
    tuned = {f"tuned.{k}": str(tuning[k]) for k in ("lr", "batch_size") if tuning[f"{k}_tuned"]}
    if tuned:
        run.log_values(tuned)
    run.log_metrics({"optimizer_steps": facts["optimizer_steps"],
                     "train_tflop": facts["train_flops"] / 1e12})
    try:
        write_text(reports_dir / "train_history.csv", facts["history_csv"])
        write_json(models_dir / "tuning.json", tuning)
        export_checkpoint(resume.path / facts["best"], models_dir / "best.ckpt")
        export_checkpoint(resume.final, models_dir / "last.ckpt")
        write_json(models_dir / "run.json", summary)
    except OSError as exc:
        where = exc.filename or models_dir
        raise OutputError(
            f"cannot write {where}: {exc.strerror or exc}. The trained model is kept in "
            f"{resume.path}; fix the cause and run `dvc repro` again: it writes the outputs "
            "without training again") from None
    for key in ("params.yaml", "dvc.yaml"):
        if Path(key).exists():
            run.log_artifact(Path(key), "config")
    for extra in ("lr_finder.png", "fit-profile.txt", "profile.txt"):
        if (resume.path / extra).exists():
            run.log_artifact(resume.path / extra, "train")
    run.log_artifact(models_dir / "best.ckpt", "checkpoint")
    return summary
