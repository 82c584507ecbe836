"""The study's MLflow run: one parent per study, each trial's run nested under it.

The train stage creates each trial's run with ``mlflow.parentRunId`` and the trial number
(:mod:`litpipe.sweep.trial`); the worker adds the trial's Optuna state when the trial ends.
The parent holds sweep.yaml, the best trial (number, params, value), the optimisation
history and the parameter importances, refreshed whenever a worker ends.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from litpipe.formats import flatten
from litpipe.sweep.spec import Sweep
from litpipe.sweep.study import study_lock
from litpipe.tracking.client import mlflow_client
from litpipe.tracking.run import TrackedRun

PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attr naming its parent run
STATE_TAG = "litpipe.sweep.state"


def parent_run(study: optuna.Study, sweep: Sweep, sweep_file: Path, uri: str,
               experiment: str, storage_url: str, lock_file: Path) -> TrackedRun:
    """The study's parent run: the one a worker already created, or a new one.

    Read and created under the study's lock (:func:`litpipe.sweep.study.study_lock`: an
    advisory lock of a PostgreSQL storage, ``lock_file`` for SQLite), so that workers
    started together, on one machine or several, make one parent between them.
    """
    with study_lock(storage_url, sweep.study, lock_file):
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id:
            return TrackedRun(uri, run_id)
        run = TrackedRun.start(uri, experiment, f"sweep-{sweep.study}",
                               {"litpipe.sweep.study": sweep.study, "litpipe.sweep.parent": "1"})
        run.log_values({f"sweep.{k}": str(v)
                        for k, v in flatten(sweep.model_dump(mode="json")).items()})
        run.log_artifact(sweep_file, "sweep")
        study.set_user_attr(PARENT_ATTR, run.run_id)
        return run


def trial_runs(uri: str, experiment: str, study: str, number: int) -> list[str]:
    """The ids of the MLflow runs that trained trial ``number`` of ``study``."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`litpipe.sweep.study` = '{study}' and tags.`litpipe.sweep.trial` = '{number}'"))
    return [r.info.run_id for r in runs]


def mark_trial(uri: str, run_id: str, number: int, state: str,
               pruned_epoch: int | None = None) -> None:
    """Tag a trial's run with its Optuna state (COMPLETE, PRUNED or FAIL)."""
    tags = {STATE_TAG: state, "litpipe.sweep.trial": str(number)}
    if pruned_epoch is not None:  # 0-based, like the epochs of train_history.csv
        tags["litpipe.sweep.pruned_epoch"] = str(pruned_epoch)
    TrackedRun(uri, run_id).set_tags(tags)


def summarize(study: optuna.Study, parent: TrackedRun, done: bool) -> None:
    """Best trial, state counts, importances and the history picture on the parent run;
    FINISHED once the study has all its trials."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    parent.log_metrics({f"trials_{k}": float(v) for k, v in counts.items()})
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return
    best: FrozenTrial = study.best_trial
    parent.log_values({"best.trial": str(best.number),
                       **{f"best.{k}": repr(v) for k, v in best.params.items()}})
    parent.log_metrics({"best_value": float(best.value)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's "experimental" notices
        if len(complete) >= 2 and len(best.params) >= 1:
            try:
                imp = optuna.importance.get_param_importances(study)
                parent.log_metrics({f"importance.{k}": float(v) for k, v in imp.items()})
            except (RuntimeError, ValueError):  # every trial with the same value: no answer
                pass
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization.matplotlib import plot_optimization_history

        ax = plot_optimization_history(study)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "optimization_history.png"
            ax.figure.savefig(path, dpi=100, bbox_inches="tight")
            parent.log_artifact(path, "sweep")
        import matplotlib.pyplot as plt

        plt.close(ax.figure)
    if done:
        parent.set_status("FINISHED")
