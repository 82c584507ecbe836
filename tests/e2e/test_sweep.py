"""`litpipe sweep` on the digits: two workers on two machines (two clones of one bare git
repository, the origin, sharing a local-directory DVC remote and one MLflow store), one
killed with SIGKILL mid-training and started again; every trial a DVC experiment, pushed
to the origin (`--push origin`), one MLflow parent run with a child per trial. The study's
storage is the PostgreSQL of the team server stack (``scripts/mlflow_server.sh``, its
password from the stack's 0600 file, given to the workers in ``$LITPIPE_SWEEP_STORAGE``
only); a short one-worker test covers the default SQLite file.

The issue's acceptance, on a tiny space (the learning rate) and two-epoch trainings:
1. the study ends with exactly TRIALS finished trials, no params trained twice, TRIALS DVC
   experiments and TRIALS COMPLETE or PRUNED child runs under one parent (plus the killed
   trial's, FAIL);
2. pruned trials ran fewer epochs than trainer.max_epochs (read from MLflow);
3. running the finished sweep again trains nothing;
4. the best trial applied to params.yaml is restored by `dvc repro` from the run-cache, in
   a third clone that pulled every trial's experiment from the origin (`dvc exp pull`) and
   the best one's run-cache (`--apply-best --pull origin`).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.repo import (
    ROOT,
    configure_tiny_digits,
    edit_params,
    make_repo_copy,
    pipeline_env,
    run,
)
from tests.helpers.resume import wait_until
from tests.helpers.servers import Stack, stack_unavailable
from tests.helpers.sweep import race_parent_runs

pytestmark = pytest.mark.e2e

TRIALS = 12
EPOCHS = 2
SWEEP = """
study: e2e
storage: null
params: params.yaml
trials: {trials}
objective: {{metric: val_acc, direction: maximize}}
sampler: {{name: tpe, seed: 0}}
pruner: {{name: median, monitor: val_acc, startup_trials: 2, warmup_epochs: 0}}
heartbeat: {{interval: 1, grace: 4, max_retry: 2}}
space:
  optimizer.lr: {{type: float, low: 1.0e-6, high: 3.0e-2, log: true}}
"""


def _sweep_repo(dest: Path, trials: int = TRIALS) -> Path:
    repo = make_repo_copy(dest)
    configure_tiny_digits(repo)
    edit_params(repo / "params.yaml", {"trainer.max_epochs": EPOCHS,
                                       "callbacks.early_stopping.enabled": False,
                                       "callbacks.val_image_samples": 0})
    (repo / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.litpipe/\n")
    (repo / "sweep.yaml").write_text(SWEEP.format(trials=trials))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "sweep"], repo)
    return repo


def _trials(storage: str) -> list[tuple[int, str, float | None]]:
    """(number, state, lr) of every trial in the study's storage, as Optuna reads it."""
    import optuna

    study = optuna.load_study(study_name="e2e", storage=storage)
    return [(t.number, t.state.name, t.params.get("optimizer.lr"))
            for t in study.get_trials(deepcopy=False)]


@pytest.fixture(scope="module")
def postgres_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database for the study on the team stack's PostgreSQL (127.0.0.1), as a team
    would point its workers at it."""
    reason = stack_unavailable()
    if reason:
        pytest.skip(reason)
    stack = Stack(tmp_path_factory.mktemp("sweep-stack"))
    try:
        stack.uri()
        import psycopg2

        port = (stack.dir / "pg_port").read_text().strip()
        password = (stack.dir / "pg_password").read_text().strip()
        db = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", password=password,
                              dbname="postgres")
        db.autocommit = True
        db.cursor().execute("CREATE DATABASE optuna")
        db.close()
        yield f"postgresql+psycopg2://mlflow:{password}@127.0.0.1:{port}/optuna"
    finally:
        stack.stop()


def test_a_sweep_on_the_default_sqlite_storage(tmp_path: Path) -> None:
    """One worker, SQLite under .litpipe/ (sweep.yaml's `storage: null`): the trials are
    asked, run as experiments, told, and the study ends at its count. (Workers, kills,
    pruning and the MLflow tree: the PostgreSQL test below, as a team runs it.)"""
    repo = _sweep_repo(tmp_path / "repo", trials=3)
    out = run(["litpipe", "sweep"], repo).stdout
    trials = _trials(f"sqlite:///{repo / '.litpipe/sweep.db'}")
    assert [(n, s) for n, s, _ in trials if s != "PRUNED"] == \
        [(n, "COMPLETE") for n, s, _ in trials if s != "PRUNED"], out[-3000:]
    assert len(trials) == 3
    exps = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout
    assert sorted(e.rsplit("/", 1)[1] for e in exps.split()) == ["e2e-0", "e2e-1", "e2e-2"]


def _children(mlflow_db: Path) -> dict[str, dict[str, str]]:
    """Every MLflow run nested under a parent: run id -> its tags."""
    with sqlite3.connect(mlflow_db) as db:
        ids = [r for (r,) in db.execute(
            "select run_uuid from tags where key = 'mlflow.parentRunId'")]
        return {r: dict(db.execute("select key, value from tags where run_uuid = ?", (r,)))
                for r in ids}


def _epochs_logged(mlflow_db: Path, run_id: str) -> list[int]:
    with sqlite3.connect(mlflow_db) as db:
        return [s for (s,) in db.execute(
            "select step from metrics where run_uuid = ? and key = 'train_loss' order by step",
            (run_id,))]


def test_workers_on_two_machines_make_one_parent(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 postgres_storage: str) -> None:
    """Two workers, each with its own lock file (two machines), start together: the
    PostgreSQL advisory lock lets one create the study's parent run, the other finds it."""
    from litpipe.sweep.spec import load_sweep

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "sweep.yaml").write_text((ROOT / "sweep.yaml").read_text().replace(
        "study: litpipe ", "study: race    "))
    sweep = load_sweep(tmp_path / "sweep.yaml")
    created, returned = race_parent_runs(
        sweep, postgres_storage, [tmp_path / "a/sweep.lock", tmp_path / "b/sweep.lock"],
        tmp_path, monkeypatch)
    assert created == ["run0"]
    assert returned == ["run0", "run0"]


def _machines(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The sweep repository pushed to a bare origin, its default DVC remote a shared
    directory (committed), and two clones of it: machines A and B."""
    seed = _sweep_repo(tmp_path / "seed")
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote")], seed)
    run(["git", "commit", "-qam", "DVC remote"], seed)
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    run(["git", "push", "-q", str(origin), "HEAD:refs/heads/main"], seed)
    clones = []
    for name in ("a", "b"):
        run(["git", "clone", "-q", "-b", "main", str(origin), name], tmp_path)
        clones.append(tmp_path / name)
    return origin, clones[0], clones[1]


def _exp_names(repo: Path, remote: str | None = None) -> list[str]:
    """The experiments of a clone, or of its git remote, by name."""
    cmd = ["git", "ls-remote", remote, "refs/exps/*"] if remote else \
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"]
    return sorted(r.rsplit("/", 1)[1] for r in run(cmd, repo).stdout.split()
                  if r.startswith("refs/exps/") and r.count("/") == 4)


def test_sweep_survives_a_killed_worker(tmp_path: Path, spawn,  # noqa: ANN001
                                        postgres_storage: str) -> None:
    storage = postgres_storage
    origin, repo, other = _machines(tmp_path)  # repo: machine A, other: machine B
    mlflow_db = tmp_path / "mlflow.db"  # the team's one tracking store
    env = {**pipeline_env(), "LITPIPE_SWEEP_STORAGE": storage,
           "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}"}
    sweep = ["litpipe", "sweep", "--push", "origin"]
    url = storage
    hold = tmp_path / "hold"
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(3)]  # noqa: SIM115
    # Worker 1's trainings wait at the start of epoch 1 (epoch 0 checkpointed): it is killed
    # there, in the middle of a trial, without racing the machine's speed.
    held = {**env, "LITPIPE_HOLD_AT_EPOCH": f"1:{hold}"}
    first = spawn(sweep, cwd=repo, env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    doomed = spawn(sweep, cwd=other, env=held, stdout=logs[1], stderr=subprocess.STDOUT)
    wait_until(lambda: (hold / "held").exists(), "worker 2's training to reach epoch 1")
    os.kill(doomed.pid, signal.SIGKILL)  # the worker only: its DVC and training are orphaned
    doomed.wait(timeout=30)
    (hold / "release").touch()  # the orphaned training now finds its worker gone
    again = spawn(sweep, cwd=other, env=env, stdout=logs[2], stderr=subprocess.STDOUT)
    for proc in (first, again):
        assert proc.wait(timeout=600) == 0, (tmp_path / "worker0.log").read_text()[-3000:]
    worker_logs = "".join((tmp_path / f"worker{i}.log").read_text() for i in range(3))
    # The password is in the environment only, never printed.
    assert storage.split(":")[2].split("@")[0] not in worker_logs

    trials = _trials(url)
    finished = [t for t in trials if t[1] in ("COMPLETE", "PRUNED")]
    assert len(finished) == TRIALS, trials
    assert len({lr for _, _, lr in finished}) == TRIALS  # no params trained twice
    failed = [t for t in trials if t[1] == "FAIL"]
    assert failed, "the killed worker's trial was not found by its heartbeat"
    # The killed trial's params were retried and finished (its retry is a new trial).
    assert {lr for _, _, lr in failed} <= {lr for _, _, lr in finished}

    # Each trial's experiment on the machine that ran it, and every one on the origin.
    names = sorted(f"e2e-{n}" for n, _, _ in finished)
    assert sorted(_exp_names(repo) + _exp_names(other)) == names
    assert _exp_names(repo, "origin") == names, worker_logs[-3000:]

    every_child = _children(mlflow_db)
    parents = {tags["mlflow.parentRunId"] for tags in every_child.values()}
    assert len(parents) == 1
    # One run per finished trial. The retry continues the killed trial's run from its
    # checkpoints, unless another worker's new training removed them first (then the killed
    # run stays, marked FAIL, and the retry trains in a run of its own: docs/usage.md).
    children = {r: t for r, t in every_child.items() if t["litpipe.sweep.state"] != "FAIL"}
    assert len(children) == TRIALS
    assert len(every_child) - len(children) <= len(failed)
    states = {tags["litpipe.sweep.trial"]: tags["litpipe.sweep.state"]
              for tags in children.values()}
    assert states == {str(n): s for n, s, _ in finished}
    for run_id, tags in children.items():
        epochs = _epochs_logged(mlflow_db, run_id)
        assert len(epochs) == len(set(epochs))  # no epoch trained (logged) twice
        if tags["litpipe.sweep.state"] == "PRUNED":  # acceptance 2
            assert len(epochs) < EPOCHS and int(tags["litpipe.sweep.pruned_epoch"]) == \
                epochs[-1]
        else:
            assert len(epochs) == EPOCHS
    assert any(s == "PRUNED" for _, s, _ in finished), "no trial was pruned"

    # 3. The finished sweep, run again, trains nothing.
    out = run(["litpipe", "sweep"], repo, env=env).stdout
    assert "dvc exp run" not in out and _children(mlflow_db) == every_child

    # 4. On a third machine, every trial pulled from the origin; the best one applied:
    #    `dvc repro train` restores it from the run-cache that travelled with the remotes.
    third = tmp_path / "c"
    run(["git", "clone", "-q", "-b", "main", str(origin), third.name], tmp_path)
    run(["dvc", "exp", "pull", "origin", *names], third)
    assert _exp_names(third) == names
    best = json.loads(run(["litpipe", "sweep", "--best"], third, env=env).stdout)
    assert (best["trial"], "COMPLETE") in {(n, s) for n, s, _ in trials}
    run(["litpipe", "sweep", "--apply-best", "--pull", "origin"], third, env=env)
    assert repr(best["params"]["optimizer.lr"]) in (third / "params.yaml").read_text()
    repro = run(["dvc", "repro", "train"], third, env=env).stdout
    assert "Stage 'train' is cached - skipping run" in repro, repro
    assert _children(mlflow_db) == every_child
    for log in logs:
        log.close()
