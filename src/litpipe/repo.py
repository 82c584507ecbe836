"""The repository a stage runs in: its root, its git state, and where each stage's outputs go.

The paths below are the ones ``dvc.yaml`` declares; stage functions take them as defaults so
that ``stages/*.py`` can call them with the params alone and tests can point them elsewhere.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

VALIDATED = Path("data/params.validated")  # validate: every stage depends on it
RAW = Path("data/raw")  # download: verified raw files, one folder per dataset
PROCESSED = Path("data/processed")  # split: {train,val,test}_{x,y}.npy + stats.json
MODELS = Path("models")  # train: checkpoints + run.json; export: models/export/
REPORTS = Path("reports")  # train, evaluate, export: metrics, plots, pictures


def find_repo_root(start: Path | None = None) -> Path:
    """The repository root: ``$DVC_ROOT`` when DVC runs us, else the nearest parent holding
    ``dvc.yaml`` (or ``.dvc/``).

    ``dvc exp run --queue`` runs stages in a temporary copy of the repo; ``DVC_ROOT`` then
    names the real one, which is where things that outlive the experiment (the MLflow DB)
    belong.
    """
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "dvc.yaml").exists() or (p / ".dvc").is_dir():
            return p
    return here


def git(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` in ``cwd`` and return the finished process (check its returncode).

    Raises ``FileNotFoundError`` when git is not installed and ``subprocess.TimeoutExpired``
    when it does not answer; callers decide whether that is fatal.
    """
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def git_output(cwd: Path, *args: str) -> str | None:
    """``git ARGS``'s stripped output, or None when git is missing, fails or hangs."""
    try:
        proc = git(cwd, *args, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None
