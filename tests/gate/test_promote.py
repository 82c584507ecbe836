"""Promotion by alias: export sets ``candidate``; ``litpipe gate --promote`` moves
``champion``, only when the gate passes on the default branch, and only to the version of
``models/run.json``'s run; ``litpipe predict --model models:/...@champion`` then uses it.

One real model is trained on digits, exported and registered in a SQLite store
(tests/helpers/registry.py) inside a throw-away git repository with ``main`` as the
default branch, its run tagged with the commit as the train stage tags it. The gate runs
in-process (``litpipe.gate.cli.main``), as CI runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litpipe.gate.cli import main as gate_main
from litpipe.gate.promote import branch_of, current_branch
from tests.helpers.models import train_checkpoint
from tests.helpers.registry import (
    MODEL_NAME,
    export_registered,
    new_run,
    sqlite_uri,
)
from tests.helpers.repo import ROOT, edit_params, pipeline_env, run

TEST_ACC = 0.9  # what the run "logged" and reports/metrics.json say
TEST_LOSS = 0.4  # in reports/metrics.json only: a gated metric the run did not log
RULES = {"classification": {"test_acc": {"min": 0.5}, "test_loss": {"max": 1.0}}}
CI_VARS = ("GITHUB_ACTIONS", "GITHUB_REF_NAME", "GITHUB_REF_TYPE", "CI_COMMIT_BRANCH")


@pytest.fixture(autouse=True)
def _no_ci_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests say which branch they are on; a CI's own variables must not."""
    for var in CI_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repo on ``main`` with params, committed metrics, a registered model (v1)."""
    from litpipe.data.processed import load_split
    from litpipe.tracking.run import TrackedRun

    base = tmp_path_factory.mktemp("promotion")
    params = train_checkpoint(base)
    run_id = new_run(base)
    TrackedRun(sqlite_uri(base), run_id).log_metrics({"test_acc": TEST_ACC})
    assert export_registered(base, params) == "1"
    shutil.copy(ROOT / "params.yaml", base / "params.yaml")
    edit_params(base / "params.yaml", {"gates.rules": RULES, "gates.dataset_rules": {},
                                       "gates.baseline": "main",
                                       "gates.missing_baseline": "pass"})
    (base / "dvc.yaml").write_text("stages: {}\n")  # marks the root, as in the real repo
    write_metrics(base, TEST_ACC)
    x, _ = load_split(base / "processed", "test")
    for i, img in enumerate(np.array(x[:3])):
        Image.fromarray(img[0]).save(base / f"digit{i}.png")
    (base / ".gitignore").write_text("/mlflow.db*\n/mlartifacts/\n/models/\n/processed/\n"
                                     "/raw/\n")
    run(["git", "init", "-q", "-b", "main"], base)
    run(["git", "add", "-A"], base)
    run(["git", "commit", "-qm", "model and metrics"], base)
    tag_as_trained(base, run_id)
    return base


def tag_as_trained(repo: Path, run_id: str) -> None:
    """Tag ``run_id`` with the train stage's own tags (its commit, clean or not) as if it had
    been trained in ``repo`` now: here the commit is made after the run."""
    from mlflow.tracking import MlflowClient

    from litpipe.tracking.tags import run_tags

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        tags = run_tags({}, repo)
    client = MlflowClient(tracking_uri=sqlite_uri(repo))
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def write_metrics(base: Path, test_acc: float, test_loss: float = TEST_LOSS) -> None:
    (base / "reports").mkdir(exist_ok=True)
    (base / "reports/metrics.json").write_text(json.dumps({  # every metric the gate needs
        "test_acc": test_acc, "test_loss": test_loss, "test_macro_f1": test_acc,
        "per_class_acc": {"0": test_acc}}))


def commit_all(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def gate(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = gate_main(["--repo", str(repo), "--promote", *args])
    out, err = capsys.readouterr()
    return code, out, err


def aliases(repo: Path) -> dict[str, str]:
    """alias → version of the registered model."""
    from mlflow.tracking import MlflowClient

    model = MlflowClient(tracking_uri=sqlite_uri(repo)).get_registered_model(MODEL_NAME)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_export_sets_candidate_not_champion(repo: Path) -> None:
    assert aliases(repo) == {"candidate": "1"}


def test_export_leaves_mlflows_process_wide_uris_alone(repo: Path) -> None:
    """An in-process export (the ``repo`` fixture ran one) must not leave MLflow's global
    tracking/registry URIs or their environment variables pointing at its store: a later
    ``MlflowClient(tracking_uri=X)`` in the same process would read another store's registry."""
    import mlflow
    from mlflow.tracking import MlflowClient

    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    other = f"sqlite:///{repo.parent / 'other.db'}"
    assert MlflowClient(tracking_uri=other)._registry_uri == other
    assert mlflow.get_registry_uri() != sqlite_uri(repo)


def test_promotion_only_by_a_passing_gate_on_the_default_branch(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A passing gate on another branch: no promotion, exit 0.
    run(["git", "checkout", "-qb", "feature"], repo)
    try:
        code, out, _ = gate(repo, capsys)
    finally:
        run(["git", "checkout", "-q", "main"], repo)
    assert code == 0
    assert "result: PASS" in out
    assert "not promoting: on branch 'feature' (git), not the default branch 'main'" in out
    assert "champion" not in aliases(repo)

    # A failing gate on main: exit 1, no promotion. (test_acc still matches the run, so
    # only the verdict stands between this model and the champion alias.)
    write_metrics(repo, TEST_ACC, test_loss=5.0)
    try:
        code, out, _ = gate(repo, capsys)
    finally:
        write_metrics(repo, TEST_ACC)
    assert code == 1
    assert "not promoting: the gate failed" in out
    assert "champion" not in aliases(repo)

    # An unevaluable gate on main (the rule's metric is missing): exit 2, no promotion.
    (repo / "reports/metrics.json").write_text(json.dumps({"other": 1.0}))
    try:
        code, _, err = gate(repo, capsys)
    finally:
        write_metrics(repo, TEST_ACC)
    assert code == 2 and "cannot evaluate" in err
    assert "champion" not in aliases(repo)

    # Passing on main: champion moves to the run's version.
    code, out, _ = gate(repo, capsys)
    assert code == 0, out
    assert f"promoted {MODEL_NAME} version 1 (run " in out
    assert aliases(repo) == {"candidate": "1", "champion": "1"}


@pytest.fixture(scope="module")
def newer_unrelated_version(repo: Path) -> str:
    """A second run registers version 2 (candidate moves there); models/run.json is put back
    to name the first run, as when a queued experiment registered a newer model."""
    from tests.helpers.models import digits_params

    saved = (repo / "models/run.json").read_bytes()
    params = digits_params()  # the params train_checkpoint trained with
    new_run(repo, "unrelated")
    try:
        version = export_registered(repo, params)
    finally:
        (repo / "models/run.json").write_bytes(saved)
    assert version == "2" and aliases(repo)["candidate"] == "2"
    return version


def test_promotion_picks_the_runs_version_not_the_newest(
        repo: Path, newer_unrelated_version: str, capsys: pytest.CaptureFixture[str]) -> None:
    """models/run.json names the first run, so the gate promotes version 1, never "the
    latest" (version 2, from another run)."""
    code, out, _ = gate(repo, capsys)
    assert code == 0, out
    assert f"promoted {MODEL_NAME} version 1 (run " in out
    assert aliases(repo)["champion"] == "1"


def test_predict_with_the_champion_uri(repo: Path, newer_unrelated_version: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`litpipe predict x.png --model models:/litpipe-classifier@champion` after promotion,
    from the repository root, as the README says: the champion (version 1, not the newer
    version 2) answers, with the same answers as the local export."""
    if aliases(repo).get("champion") is None:
        assert gate(repo, capsys)[0] == 0
    assert aliases(repo)["champion"] == "1"
    files = ["digit0.png", "digit1.png", "digit2.png"]
    cmd = [sys.executable, "-m", "litpipe.cli", "predict", *files]
    remote = subprocess.run([*cmd, "--model", f"models:/{MODEL_NAME}@champion"], cwd=repo,
                            env=pipeline_env(), capture_output=True, text=True, timeout=300)
    assert remote.returncode == 0, remote.stderr
    assert f"registry model models:/{MODEL_NAME}@champion ({MODEL_NAME} version 1, run " \
        in remote.stderr
    assert "Downloading" not in remote.stderr  # MLflow's progress bars stay off
    local = subprocess.run([*cmd, "--onnx", "models/export/model.onnx"], cwd=repo,
                           env=pipeline_env(), capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert {r["class"] for r in json.loads(remote.stdout)} <= {str(i) for i in range(10)}


# ------------------------------------------------------------- what cannot be promoted

def one_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("litpipe gate: cannot promote: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def run_json(repo: Path) -> Path:
    """models/run.json, restored after the test."""
    path = repo / "models/run.json"
    saved = path.read_bytes()
    yield path
    path.write_bytes(saved)


def test_missing_store_is_one_line(repo: Path, run_json: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_id = json.loads(run_json.read_text())["run_id"]
    gone = tmp_path / "gone.db"
    run_json.write_text(json.dumps({"run_id": run_id, "tracking_uri": f"sqlite:///{gone}"}))
    code, _, err = gate(repo, capsys)
    assert code == 2
    one_line(err, f"MLflow database {gone} does not exist")
    assert not gone.exists()  # looked for, not created


def test_unreachable_server_is_one_line(repo: Path, run_json: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run_id = json.loads(run_json.read_text())["run_id"]
    run_json.write_text(json.dumps({"run_id": run_id,
                                    "tracking_uri": f"http://127.0.0.1:{port}"}))
    code, _, err = gate(repo, capsys)
    assert code == 2
    one_line(err, f"MLflow tracking server http://127.0.0.1:{port} is unreachable")


def test_run_without_a_version_is_one_line(repo: Path, run_json: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from litpipe.tracking.run import TrackedRun

    run_id = new_run(repo, "never exported")
    tag_as_trained(repo, run_id)
    TrackedRun(sqlite_uri(repo), run_id).log_metrics({"test_acc": TEST_ACC})
    champion = aliases(repo).get("champion")
    code, _, err = gate(repo, capsys)
    assert code == 2
    one_line(err, f"no version of '{MODEL_NAME}' was registered from run {run_id}",
             "dvc repro export")
    assert aliases(repo).get("champion") == champion  # unchanged


def test_metrics_of_another_run_are_refused(repo: Path, run_json: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The gate passed on metrics the run did not log: its model was not what was judged.
    (Committed, as results are: the run's commit then differs from HEAD in reports/ only.)"""
    write_metrics(repo, 0.95)
    commit_all(repo, "other metrics")
    try:
        code, out, err = gate(repo, capsys)
    finally:
        write_metrics(repo, TEST_ACC)
        commit_all(repo, "the run's metrics again")
    assert code == 2 and "result: PASS" in out
    one_line(err, "the gated test_acc = 0.95 is not what run", f"logged ({TEST_ACC:g})")


# ------------------------------------------------- only the commit's model is promoted

def test_a_dirty_workspace_is_refused_in_one_line(repo: Path, run_json: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 22: an experiment applied to the workspace (params.yaml modified, a new module)
    is refused before any store is read: run.json names a store that does not exist, and
    the line is about the workspace, not the store (nor is the store created)."""
    params = repo / "params.yaml"
    saved = params.read_bytes()
    extra = repo / "src/extra.py"
    champion = aliases(repo).get("champion")
    run_id = json.loads(run_json.read_text())["run_id"]
    gone = tmp_path / "gone.db"
    run_json.write_text(json.dumps({"run_id": run_id, "tracking_uri": f"sqlite:///{gone}"}))
    edit_params(params, {"optimizer.lr": 0.5})
    extra.parent.mkdir()
    extra.write_text("LR = 0.5\n")
    try:
        code, out, err = gate(repo, capsys)
    finally:
        params.write_bytes(saved)
        shutil.rmtree(extra.parent)
    assert code == 2 and "result: PASS" in out
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    one_line(err, "the workspace has uncommitted changes (params.yaml, src/extra.py "
             f"(untracked)) on top of commit {head[:12]}")
    assert not gone.exists()
    assert aliases(repo).get("champion") == champion


def test_a_run_from_another_commit_is_refused(repo: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The params were committed after the run: HEAD is not the commit it was trained from.
    A later commit of results only (reports/, dvc.lock) is the commit's own model."""
    from mlflow.tracking import MlflowClient

    start = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
    trained = MlflowClient(tracking_uri=sqlite_uri(repo)).get_run(run_id).data.tags["git.commit"]
    champion = aliases(repo).get("champion")
    edit_params(repo / "params.yaml", {"optimizer.lr": 0.5})
    commit_all(repo, "new lr")
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    try:
        code, _, err = gate(repo, capsys)
    finally:
        run(["git", "reset", "-q", "--hard", start], repo)  # this scratch repository's
    assert code == 2
    one_line(err, f"was trained from commit {trained[:12]}, not from HEAD {head[:12]} "
             "(they differ in params.yaml)")
    assert aliases(repo).get("champion") == champion

    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    commit_all(repo, "results")
    try:
        code, out, err = gate(repo, capsys)
    finally:
        run(["git", "reset", "-q", "--hard", start], repo)
    assert code == 0, err
    assert f"promoted {MODEL_NAME} version 1 (run " in out


# ------------------------------------------------------------------ the default branch

def test_branch_detection(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert current_branch(repo).name == "main"
    assert current_branch(repo, "release").name == "release"
    # GitHub Actions checks out a detached commit; its variables name the branch. A pull
    # request's ref is "<n>/merge", never the default branch.
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REF_NAME", "12/merge")
    assert current_branch(repo).name == "12/merge"
    monkeypatch.setenv("GITHUB_REF_TYPE", "tag")
    assert current_branch(repo).name is None
    for var in CI_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CI_COMMIT_BRANCH", "main")
    assert current_branch(repo).source == "CI_COMMIT_BRANCH"
    monkeypatch.delenv("CI_COMMIT_BRANCH")
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    run(["git", "checkout", "-q", "--detach", head], repo)
    try:
        assert current_branch(repo).name is None  # detached HEAD: on no branch
    finally:
        run(["git", "checkout", "-q", "main"], repo)
    run(["git", "remote", "add", "origin", "https://example.invalid/repo.git"], repo)
    try:
        assert branch_of(repo, "origin/main") == "main"
        assert branch_of(repo, "refs/heads/main") == "main"
        assert branch_of(repo, "feature/x") == "feature/x"  # not a remote's name
    finally:
        run(["git", "remote", "remove", "origin"], repo)


def test_pull_request_on_github_never_promotes(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REF_NAME", "12/merge")
    champion = aliases(repo).get("champion")
    code, out, _ = gate(repo, capsys)
    assert code == 0
    assert "not promoting: on branch '12/merge' (GITHUB_REF_NAME)" in out
    assert aliases(repo).get("champion") == champion
