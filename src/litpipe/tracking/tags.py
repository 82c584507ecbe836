"""The tags that let a run be traced to its code and data and filtered in the MLflow UI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from litpipe import __version__
from litpipe.repo import find_repo_root, git_output

# What `dvc repro` itself rewrites before the train stage runs (the lock file, the tracked
# reports): a difference there says nothing about the code or params the run used.
PIPELINE_WRITES = ("dvc.lock", "reports")


def changed_files(cwd: Path) -> list[str] | None:
    """Tracked files that differ from the commit, outside what the pipeline writes itself.

    None when git cannot tell (not a repository, no git).
    """
    excludes = [f":(top,exclude){p}" for p in PIPELINE_WRITES]
    names = git_output(cwd, "diff", "--name-only", "HEAD", "--", ":/", *excludes)
    if names is None:
        return None
    return [line for line in names.splitlines() if line.strip()]


def run_tags(stats: dict[str, Any], root: Path | None = None) -> dict[str, str]:
    """Tags that let a run be traced to code and data and filtered in the UI."""
    root = root or find_repo_root()
    cwd = Path.cwd()
    tags = {
        "litpipe.version": __version__,
        "dataset": str(stats.get("dataset")),
        "dataset.hash": str(stats.get("data_hash")),
    }
    for split, h in stats.get("hashes", {}).items():
        tags[f"dataset.hash.{split}"] = h
    commit = git_output(cwd, "rev-parse", "HEAD") or git_output(root, "rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.commit"] = commit
        changed = changed_files(cwd)
        if changed is not None:
            tags["git.dirty"] = str(bool(changed)).lower()
            if changed:
                tags["git.dirty.files"] = ", ".join(changed)[:500]
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        tags["dvc.exp_name"] = exp_name
    return tags
