"""A sweep worker: ask Optuna for a trial, run it as a DVC experiment, tell the result;
until the study has the requested number of finished (COMPLETE or PRUNED) trials.

Each trial is ``dvc exp run --temp -n <study>-<number> -S key=value ...`` up to the stage
the objective needs: DVC runs it in a temporary copy, so several workers share one
repository; the experiment is committed (``dvc exp show | apply | push`` work on it), its
outputs are in DVC's cache, and params run before are restored from the run-cache.

**Pruned trials** keep their experiment: the train stage stops at the pruned epoch and
writes its outputs, with ``pruned_at_epoch`` in ``models/run.json``, and the trial's MLflow
run is tagged PRUNED with that epoch. Their train stage's run-cache entry is then removed:
the pruning depended on other trials, not on the params, so a later ``dvc repro`` of those
params must train in full rather than restore a pruned model. Optuna never picks a PRUNED
trial as best.

**Several machines** share the study through a PostgreSQL storage; with ``--push REMOTE``
each finished trial's experiment goes to the git and DVC remotes (:mod:`.remote`), so the
machine that applies the best can pull it.

**Killed workers.** ``study.optimize`` keeps a heartbeat on the trial it runs; a trial whose
heartbeat stops is failed by the next worker that looks and its params queued again as a
new trial (``RetryHeartbeatStaleTrialCallback``). The dead worker's training stops at its
next batch (:class:`litpipe.sweep.trial.TrialPruning` watches the worker); its MLflow run
is tagged FAIL, and the retry trains in a run of its own (from the start when another
training has meanwhile removed the killed one's resume directory).
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from litpipe.params import load_params
from litpipe.sweep import remote, tracking
from litpipe.sweep import study as studies
from litpipe.sweep.spec import Sweep, SweepError, cli_value
from litpipe.sweep.trial import SWEEP_ENV, TrialContext
from litpipe.tracking.store import check_store, resolve_tracking_uri

MAX_FAILURES = 3  # trials failing in a row (a diverging space, a broken stage): stop


class TrialFailed(Exception):
    """The trial's experiment failed (its output says why); the trial is FAIL."""


def _die_with_parent() -> None:
    """In the child: be killed when the worker dies (Linux), so a killed worker's DVC does
    not go on to commit an experiment for a trial the study has given up."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Worker:
    def __init__(self, sweep: Sweep, sweep_file: Path, root: Path,
                 push: str | None = None) -> None:
        self.sweep, self.sweep_file, self.root = sweep, sweep_file, root
        self.push = push  # a git remote: every finished trial's experiment goes there
        params = load_params(root / sweep.params)
        self.experiment = params.tracking.experiment
        self.uri = resolve_tracking_uri(params.tracking, root)
        self.storage_url = studies.storage_url(sweep, root, dict(os.environ))
        self._retry = RetryHeartbeatStaleTrialCallback(max_retry=sweep.heartbeat.max_retry)

    def _on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A dead worker's trial: its MLflow run says FAIL, its params are queued again."""
        print(f"litpipe sweep: trial {trial.number}'s worker stopped beating; retrying its "
              "params as a new trial", file=sys.stderr)
        for run_id in tracking.trial_runs(self.uri, self.experiment, study.study_name,
                                          trial.number):
            tracking.mark_trial(self.uri, run_id, trial.number, "FAIL")
        self._retry(study, trial)

    def run(self) -> int:
        check_store(self.uri)
        storage = studies.open_storage(self.storage_url, self.sweep, self._on_stale)
        study = studies.open_study(self.sweep, storage)
        lock_file = self.root / ".litpipe/sweep.lock"  # SQLite: one machine's workers
        with studies.study_lock(self.storage_url, self.sweep.study, lock_file):
            worker = studies.join(study)  # in turn, on every machine
        if worker:  # a later worker: its own sampler stream (study.py says why)
            study = studies.open_study(self.sweep, storage, worker)
        self.parent = tracking.parent_run(study, self.sweep, self.sweep_file, self.uri,
                                          self.experiment, self.storage_url, lock_file)
        failures = 0
        while True:
            optuna.storages.fail_stale_trials(study)
            finished, pending = studies.tally(study)
            if finished >= self.sweep.trials:
                break
            if finished + pending >= self.sweep.trials:  # others run the rest: wait, since
                time.sleep(self.sweep.heartbeat.interval)  # one of them may die
                continue
            study.optimize(self._objective, n_trials=1, catch=(TrialFailed,))
            self._push_finished(study)
            last = study.get_trials(deepcopy=False)[-1]
            failed = last.state == optuna.trial.TrialState.FAIL \
                and not last.user_attrs.get("surplus")
            failures = failures + 1 if failed else 0
            if failures >= MAX_FAILURES:
                raise SweepError(f"{failures} trials failed in a row; see their output above")
        if not self._push_finished(study):
            print(f"litpipe sweep: some experiments are not on {self.push}; `litpipe sweep "
                  f"--push {self.push}` again pushes them", file=sys.stderr)
        tracking.summarize(study, self.parent, done=True)
        best = studies.best_trial(study)
        print(f"litpipe sweep: study {self.sweep.study} has {finished} finished trials; best "
              f"is trial {best.number} ({self.sweep.objective.metric} {best.value:.6g})")
        return 0

    def _push_finished(self, study: optuna.Study) -> bool:
        """With ``--push``: push this clone's finished trials that ``self.push`` lacks (the
        one just finished, and any whose push failed or whose worker was killed before
        it); return whether all are there. A failed push is one line and waits for the
        next trial's end: it never fails a trial."""
        if not self.push:
            return True
        try:
            local, there = remote.exp_refs(self.root), remote.exp_refs(self.root, self.push)
        except remote.RemoteError as exc:
            print(f"litpipe sweep: cannot reach {self.push} (retried after the next trial): "
                  f"{exc}", file=sys.stderr)
            return False
        names = [t.user_attrs["dvc_exp"] for t in study.get_trials(deepcopy=False)
                 if t.state in studies.FINISHED and "dvc_exp" in t.user_attrs]
        missing = [n for n in names if n in local and there.get(n) != local[n]]
        for name in list(missing):
            try:
                remote.push(self.root, self.push, name)
            except remote.RemoteError as exc:
                print(f"litpipe sweep: could not push {name} to {self.push} (retried after "
                      f"the next trial): {exc}", file=sys.stderr)
                break
            missing.remove(name)
            print(f"litpipe sweep: pushed {name} to {self.push} (dvc exp push --run-cache)",
                  flush=True)
        return not missing

    def _objective(self, trial: optuna.Trial) -> float:
        values = studies.suggest(trial, self.sweep)
        if studies.is_surplus(trial.study, trial.number, self.sweep.trials):
            trial.set_user_attr("surplus", True)
            raise TrialFailed("surplus")
        name = f"{self.sweep.study}-{trial.number}"
        trial.set_user_attr("dvc_exp", name)
        ctx = TrialContext(storage=self.storage_url, study=self.sweep.study,
                           trial_id=trial._trial_id, number=trial.number,
                           parent_run_id=self.parent.run_id, worker_pid=os.getpid(),
                           monitor=self.sweep.pruner.monitor,
                           pruner=self.sweep.pruner.model_dump())
        # `dvc exp run --temp -n NAME -S ... TARGET`, made safe beside other workers of this
        # clone (sweep/dvc_exp.py says why the plain command is not).
        cmd = [sys.executable, "-m", "litpipe.sweep.dvc_exp", name, self.sweep.target,
               *[f"{k}={cli_value(v)}" for k, v in values.items()]]
        shown = " ".join(["dvc exp run --temp -n", name, *[f"-S {a}" for a in cmd[4:]],
                          self.sweep.target])
        print(f"litpipe sweep: trial {trial.number}: {shown}", flush=True)
        proc = subprocess.run(cmd, cwd=self.root, env={**os.environ, SWEEP_ENV: ctx.to_env()},
                              preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise TrialFailed(f"dvc exp run exited {proc.returncode}")
        ref = _exp_ref(self.root, name)
        run_info = json.loads(_read(self.root, "models/run.json", ref))
        pruned = run_info.get("pruned_at_epoch")
        state = "COMPLETE" if pruned is None else "PRUNED"
        trial.set_user_attr("mlflow_run_id", run_info["run_id"])
        tracking.mark_trial(self.uri, run_info["run_id"], trial.number, state, pruned)
        if pruned is not None:
            drop_run_cache(self.root, ref)
            raise optuna.TrialPruned(f"pruned after epoch {pruned + 1}")
        return _objective_value(self.root, ref, self.sweep.objective.metric)


def _exp_ref(root: Path, name: str) -> str:
    """The git ref of DVC experiment ``name`` (refs/exps/<baseline>/<name>)."""
    ref = remote.exp_refs(root).get(name)
    if ref is None:
        raise TrialFailed(f"experiment {name} was not committed")
    return ref.split()[0]


def _read(root: Path, path: str, rev: str) -> str:
    """A file of revision ``rev``, from git or DVC's cache (``dvc.api.read``)."""
    import dvc.api

    return dvc.api.read(path, repo=str(root), rev=rev)


def _objective_value(root: Path, ref: str, metric: str) -> float:
    if metric.startswith("val_"):  # the last validation epoch
        rows = list(csv.DictReader(io.StringIO(_read(root, "reports/train_history.csv", ref))))
        value = rows[-1].get(metric) if rows else None
    else:
        from litpipe.formats import flatten

        value = flatten(json.loads(_read(root, "reports/metrics.json", ref))).get(metric)
    if value in (None, ""):
        raise TrialFailed(f"the experiment has no {metric}")
    return float(value)


def drop_run_cache(root: Path, ref: str) -> int:
    """Remove the run-cache entries whose outputs are the pruned experiment's ``ref``
    (found by its ``models/run.json`` digest, unique to that training); return how many."""
    import yaml

    lock = yaml.safe_load(_read(root, "dvc.lock", ref))
    outs = lock["stages"]["train"]["outs"]
    digest = next(o["md5"] for o in outs if o["path"] == "models/run.json")
    removed = 0
    for entry in (root / ".dvc/cache/runs").glob("*/*/*"):
        if entry.is_file() and digest in entry.read_text(errors="replace"):
            entry.unlink()
            removed += 1
    return removed


def best(sweep: Sweep, root: Path) -> tuple[FrozenTrial, dict[str, Any]]:
    """The best COMPLETE trial and its params, from the storage."""
    study = studies.load_study(sweep, studies.storage_url(sweep, root, dict(os.environ)))
    trial = studies.best_trial(study)
    return trial, dict(trial.params)


def missing_here(trial: FrozenTrial, root: Path) -> str | None:
    """Why trial's experiment is not in this clone (it ran on another machine), as the
    one line that says how to bring it, or None when it is here."""
    name = trial.user_attrs.get("dvc_exp")
    if not name or name in remote.exp_refs(root):
        return None
    remotes = subprocess.run(["git", "remote"], cwd=root, capture_output=True,
                             text=True).stdout.split()
    git_remote = "origin" if "origin" in remotes else (remotes or ["REMOTE"])[0]
    return (f"trial {trial.number}'s experiment {name} is not in this clone (another machine "
            f"ran it): add --pull {git_remote}, or `dvc exp pull --run-cache {git_remote} "
            f"{name}` and then `dvc repro --pull`")


def fetch(trial: FrozenTrial, root: Path, git_remote: str) -> None:
    """Pull trial's experiment and its run-cache entries from ``git_remote``: also when the
    experiment is here (a plain ``dvc exp pull`` brought it), as its run-cache may not be."""
    if trial.user_attrs.get("dvc_exp"):
        remote.pull(root, git_remote, trial.user_attrs["dvc_exp"])


def apply_best(sweep: Sweep, root: Path, pull: str | None = None) -> dict[str, Any]:
    """Write the best trial's params into params.yaml (comments kept: DVC's own editor, the
    one ``dvc exp run -S`` uses, so the values hash as the trial's did).

    Refused when its experiment is on another machine (``dvc repro`` would train it
    again), unless ``pull`` names the git remote to bring it (and its run-cache) from."""
    from dvc.utils.serialize import modify_yaml

    trial, values = best(sweep, root)
    if pull:
        fetch(trial, root, pull)
    elif why := missing_here(trial, root):
        raise SweepError(why)
    with modify_yaml(root / sweep.params) as data:
        for dotted, value in values.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node[key]
            node[leaf] = value
    return values
