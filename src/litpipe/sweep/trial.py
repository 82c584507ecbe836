"""The train stage's side of a sweep: which trial it trains for, and its pruning callback.

The sweep worker (:mod:`litpipe.sweep.worker`) runs each trial as ``dvc exp run``, and DVC
passes the worker's environment to the stages: :data:`SWEEP_ENV` (JSON) is the one place
the train stage learns the trial, read here only. Without it the train stage behaves as it
always does, so a trial's experiment reproduces with a plain ``dvc repro``. This module is
small and imports optuna only when a trial is being trained: it is a train-stage dependency
(``dvc.yaml``), and every edit of it reruns training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from litpipe.errors import LitpipeError

SWEEP_ENV = "LITPIPE_SWEEP_TRIAL"


class WorkerGone(LitpipeError):
    """The sweep worker that ran this trial has died: its training stops (checkpoints kept)."""


@dataclass(frozen=True)
class TrialContext:
    """What the worker tells the train stage about the trial it is training for."""

    storage: str  # Optuna storage URL (from the environment, never a file)
    study: str
    trial_id: int
    number: int
    parent_run_id: str | None  # the study's MLflow run, parent of this trial's run
    worker_pid: int
    monitor: str  # val_loss | val_acc, reported each epoch
    pruner: dict[str, Any]  # sweep.yaml's pruner section

    @classmethod
    def from_env(cls) -> TrialContext | None:
        raw = os.environ.get(SWEEP_ENV)
        return cls(**json.loads(raw)) if raw else None

    def to_env(self) -> str:
        return json.dumps(self.__dict__)

    def run_tags(self) -> dict[str, str]:
        """The MLflow tags nesting this trial's run under the study's run."""
        tags = {"litpipe.sweep.study": self.study, "litpipe.sweep.trial": str(self.number)}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        return tags


def build_pruner(cfg: dict[str, Any]) -> Any:
    """The Optuna pruner sweep.yaml names (the worker's study and this stage use the same)."""
    import optuna

    if cfg["name"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg["startup_trials"],
                                           n_warmup_steps=cfg["warmup_epochs"])
    if cfg["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
    except OSError:
        return True  # no /proc: cannot tell, assume alive


class TrialPruning(Callback):
    """Reports each epoch's ``monitor`` value to the trial and stops the fit when the
    study's pruner says so, at that epoch's end (its checkpoint is written).

    Not ``optuna_integration.PyTorchLightningPruningCallback``: that needs the ``Trial``
    object of the process that asked for it, while here the trial was asked for by the
    worker, another process (re-opened by id from the storage); a resumed training must not
    report restored epochs again; and the training must stop when its worker dies (so the
    retried trial resumes from the checkpoints instead of racing this one).
    """

    def __init__(self, ctx: TrialContext) -> None:
        import optuna

        self.ctx = ctx
        study = optuna.load_study(study_name=ctx.study, storage=ctx.storage,
                                  pruner=build_pruner(ctx.pruner))
        self.trial = optuna.trial.Trial(study, ctx.trial_id)
        self.pruned_epoch: int | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if not _alive(self.ctx.worker_pid):
            raise WorkerGone(f"sweep worker {self.ctx.worker_pid} is gone; trial "
                             f"{self.ctx.number} stops here, its checkpoints kept for the "
                             "retry")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.ctx.monitor)
        if trainer.sanity_checking or value is None or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True
            print(f"litpipe train: sweep trial {self.ctx.number} pruned after epoch "
                  f"{epoch + 1}", flush=True)
