"""The tags that let a run be traced to its code and data and filtered in the MLflow UI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from litpipe import __version__
from litpipe.repo import find_repo_root, git_output


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
        status = git_output(cwd, "status", "--porcelain", "--untracked-files=no")
        tags["git.dirty"] = str(bool(status)).lower()
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        tags["dvc.exp_name"] = exp_name
    return tags
