"""litpipe.tracking.tags: the tags a run gets from the repository it ran in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.repo import pipeline_env


def test_git_dirty_ignores_what_the_pipeline_rewrites(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc repro` rewrites dvc.lock and reports/ before train runs: not a dirty tree."""
    from litpipe.tracking.tags import run_tags

    monkeypatch.chdir(tmp_path)  # the stage's working copy (a queued experiment's, say)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                       env=pipeline_env())

    for name in ("dvc.lock", "params.yaml", "reports/metrics.json", "src/code.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "c")
    stats = {"dataset": "digits", "data_hash": "x"}
    assert run_tags(stats, tmp_path)["git.dirty"] == "false"
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "reports/metrics.json").write_text("v2\n")
    assert run_tags(stats, tmp_path)["git.dirty"] == "false"
    (tmp_path / "params.yaml").write_text("v2\n")
    tags = run_tags(stats, tmp_path)
    assert tags["git.dirty"] == "true" and tags["git.dirty.files"] == "params.yaml"
    (tmp_path / "params.yaml").write_text("v1\n")
    (tmp_path / "src/code.py").write_text("v2\n")
    assert run_tags(stats, tmp_path)["git.dirty"] == "true"
