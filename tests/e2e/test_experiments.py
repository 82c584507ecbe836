"""DVC experiments and MLflow: `dvc exp run -S`, queued experiments, one DB for all runs.

Queued experiments run in temporary workspaces under .dvc/tmp/exps; their MLflow runs must
still land in the repository's own SQLite DB (found through $DVC_ROOT), complete.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.helpers.dvc_queue import run_queue
from tests.helpers.repo import configure_tiny_digits, edit_params, make_repo_copy, run

pytestmark = pytest.mark.e2e


def test_exp_run_shares_the_mlflow_db_with_repro(repo_copy: Path) -> None:
    repo = repo_copy
    configure_tiny_digits(repo, {"classification": {"test_acc": {"min": 0.5}}})
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline run"], repo)

    run(["dvc", "exp", "run", "-S", "optimizer.lr=0.003"], repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    text = json.dumps(shown)
    assert "test_acc" in text and "0.003" in text

    db = sqlite3.connect(repo / "mlflow.db")
    runs = db.execute("select run_uuid, status from runs").fetchall()
    assert len(runs) == 2, runs  # repro + exp run; no stray runs
    lrs = sorted(v for (v,) in db.execute("select value from params where key='optimizer.lr'"))
    assert lrs == ["0.003", "0.004"]
    for run_id, status in runs:
        assert status == "FINISHED"
        keys = {k for (k,) in db.execute("select key from metrics where run_uuid=?",
                                         (run_id,))}
        assert {"train_loss", "val_acc", "test_acc", "onnx_max_abs_diff"} <= keys, keys
    exp_names = [v for (v,) in db.execute("select value from tags where key='dvc.exp_name'")]
    assert len(exp_names) == 1  # the `dvc exp` run is tagged with its experiment name
    versions = db.execute("select version from model_versions order by version").fetchall()
    assert [v for (v,) in versions] == [1, 2]
    db.close()
    # Queued experiments (their own workspaces, the same DB): test_parallel_queue_on_a_fresh_db.


# How many fresh clones the parallel-queue test runs (CI: 1; `LITPIPE_QUEUE_ROUNDS=3` for the
# repeated check of a race, which is what this test is about).
ROUNDS = int(os.environ.get("LITPIPE_QUEUE_ROUNDS", "1"))


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_parallel_queue_on_a_fresh_db(tmp_path: Path, round_: int) -> None:
    """3 queued experiments, 2 at a time, on a clone with no mlflow.db yet.

    Two processes creating MLflow's SQLite schema at once used to break each other
    ("index ... already exists", "duplicate column name"); the store is now created once,
    under a lock, before any writer touches it. The first two start together on the empty
    store (the race); the third starts while the second is still writing.
    """
    repo = make_repo_copy(tmp_path / "repo")
    configure_tiny_digits(repo)
    edit_params(repo / "params.yaml", {"trainer.max_epochs": 1,
                                       "callbacks.val_image_samples": 0})
    run(["git", "commit", "-qam", "one epoch"], repo)
    assert not (repo / "mlflow.db").exists()
    lrs = ("0.001", "0.002", "0.003")
    for lr in lrs:
        run(["dvc", "exp", "run", "--queue", "-S", f"optimizer.lr={lr}"], repo)
    status = run_queue(repo, jobs=2)
    assert "Failed" not in status, status
    with sqlite3.connect(repo / "mlflow.db") as db:
        runs = db.execute("select status from runs").fetchall()
        versions = db.execute("select count(*) from model_versions").fetchone()[0]
        logged = sorted(v for (v,) in db.execute(
            "select value from params where key='optimizer.lr'"))
    assert runs == [("FINISHED",)] * len(lrs)
    assert versions == len(lrs)
    assert logged == list(lrs)
    with sqlite3.connect(repo / "mlflow.db") as db:
        exp_names = [v for (v,) in db.execute(
            "select value from tags where key='dvc.exp_name'")]
    assert len(set(exp_names)) == len(lrs)  # each run tagged with its experiment's name
    # Artifacts of queued runs live under the repo, not in the deleted temp workspaces.
    assert not list((repo / ".dvc/tmp/exps").glob("tmp*/mlartifacts"))
    assert len(list((repo / "mlartifacts").rglob("samples.png"))) == len(lrs)
