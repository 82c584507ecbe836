"""Only a committed model is promoted: which workspaces count as the commit, and which runs
as trained from it (the gate's own refusals are in test_promote.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from litpipe.gate.provenance import (
    ProvenanceError,
    check_run_commit,
    check_workspace_clean,
    uncommitted_files,
)
from tests.helpers.repo import run


def commit_all(repo: Path, message: str) -> str:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository shaped like litpipe's, with ignored outputs."""
    for name, text in {"params.yaml": "lr: 0.1\n", "dvc.yaml": "stages: {}\n",
                       "dvc.lock": "schema: '2.0'\n", "src/litpipe/net.py": "WIDTH = 8\n",
                       "stages/train.py": "", "reports/metrics.json": "{}\n",
                       ".gitignore": "/models/\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    commit_all(tmp_path, "pipeline")
    return tmp_path


def clean_run(commit: str) -> dict[str, str]:
    """The git tags the train stage gives a run trained from ``commit`` unmodified."""
    return {"git.commit": commit, "mlflow.source.git.commit": commit, "git.dirty": "false"}


def test_a_clean_workspace_passes_and_names_head(repo: Path) -> None:
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    (repo / "models").mkdir()
    (repo / "models/run.json").write_text("{}")  # ignored: a DVC output
    (repo / "notes.txt").write_text("")  # untracked, outside the code: no stage reads it
    (repo / "reports/gate.md").write_text("")  # what CI writes before promoting
    assert check_workspace_clean(repo) == head


@pytest.mark.parametrize("change, named", [
    (lambda r: (r / "params.yaml").write_text("lr: 0.5\n"), "params.yaml"),
    (lambda r: (r / "dvc.lock").write_text("changed\n"), "dvc.lock"),  # `dvc exp apply`
    (lambda r: (r / "reports/metrics.json").unlink(), "reports/metrics.json"),
    (lambda r: (r / "src/litpipe/net.py").write_text("WIDTH = 9\n")
     or run(["git", "add", "-A"], r), "src/litpipe/net.py"),  # staged, not committed
    (lambda r: (r / "src/litpipe/extra.py").write_text(""), "src/litpipe/extra.py (untracked)"),
    (lambda r: (r / "stages/more.py").write_text(""), "stages/more.py (untracked)"),
])
def test_uncommitted_code_params_and_lock_are_named(repo: Path, change: Callable[[Path], object],
                                                    named: str) -> None:
    change(repo)
    assert uncommitted_files(repo) == [named]
    with pytest.raises(ProvenanceError, match="uncommitted changes") as refused:
        check_workspace_clean(repo)
    assert named in str(refused.value) and "\n" not in str(refused.value)


def test_not_a_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProvenanceError, match="not a git repository"):
        check_workspace_clean(tmp_path)


def test_a_run_from_head_passes(repo: Path) -> None:
    head = check_workspace_clean(repo)
    check_run_commit(repo, head, "r1", clean_run(head))
    check_run_commit(repo, head, "r1", {"mlflow.source.git.commit": head, "git.dirty": "false"})


def test_results_committed_after_the_run_are_its_commit(repo: Path) -> None:
    """`dvc repro`, then `git commit dvc.lock reports/`: HEAD is the run's commit's child."""
    trained = check_workspace_clean(repo)
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {}}\n")
    (repo / "reports/metrics.json").write_text('{"test_acc": 0.9}\n')
    head = commit_all(repo, "results")
    check_run_commit(repo, head, "r1", clean_run(trained))


def test_docs_committed_after_the_results_keep_the_run_promotable(repo: Path) -> None:
    """A README fix after the results: `dvc repro` would retrain nothing, so refusing here
    would leave no way to promote the model."""
    trained = check_workspace_clean(repo)
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {}}\n")
    commit_all(repo, "results")
    (repo / "README.md").write_text("how to run it\n")
    (repo / "tests").mkdir()
    (repo / "tests/test_net.py").write_text("")
    head = commit_all(repo, "docs")
    check_run_commit(repo, head, "r1", clean_run(trained))


@pytest.mark.parametrize("path", ["params.yaml", "src/litpipe/net.py", "dvc.yaml",
                                  "stages/train.py", "data/raw.dvc"])
def test_a_run_from_another_commit_is_refused(repo: Path, path: str) -> None:
    trained = check_workspace_clean(repo)
    (repo / "dvc.lock").write_text("a lock that comes with it\n")
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text("changed\n")
    head = commit_all(repo, "after the run")
    with pytest.raises(ProvenanceError) as refused:
        check_run_commit(repo, head, "r1", clean_run(trained))
    assert str(refused.value).startswith(
        f"run r1 was trained from commit {trained[:12]}, not from HEAD {head[:12]} "
        f"(they differ in {path});")


@pytest.mark.parametrize("tags, says", [
    ({"git.dirty": "false"}, "has no git commit tag"),
    ({"git.dirty": "true", "git.dirty.files": "params.yaml"},
     "with uncommitted changes (params.yaml), not from a commit"),
    ({}, "without a git.dirty tag"),
])
def test_a_run_not_from_a_commit_is_refused(repo: Path, tags: dict[str, str],
                                            says: str) -> None:
    """The run's own tags say it was trained from edits (an applied `dvc exp run`), or say
    nothing: even at HEAD, it is not the commit's model."""
    head = check_workspace_clean(repo)
    commit = {} if "no git commit" in says else {"git.commit": head}
    with pytest.raises(ProvenanceError, match=says.replace("(", r"\(").replace(")", r"\)")):
        check_run_commit(repo, head, "r1", {**commit, **tags})


def test_a_commit_this_clone_lacks_is_named(repo: Path) -> None:
    head = check_workspace_clean(repo)
    with pytest.raises(ProvenanceError, match="which this clone lacks"):
        check_run_commit(repo, head, "r1", clean_run("0" * 40))
