"""The checkout, throw-away copies of it, their params, and commands run in them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests/helpers/repo.py is 2 below
VENV_BIN = Path(sys.executable).parent

# Files a pipeline copy needs; data/, models/, reports/ and the MLflow DB stay behind. The
# DVC files are the committed ones, as a clone has them (`dvc init` would write a config
# without the repository's settings, analytics off among them, and report its own use).
REPO_FILES = ("dvc.yaml", "params.yaml", "stages", "pyproject.toml", ".dvc/config",
              ".dvc/.gitignore", ".dvcignore",
              ".dvc/plots")  # the `dvc plots` page .dvc/config names (plots.html_template)


def pipeline_env() -> dict[str, str]:
    """Environment for subprocess stages: the venv first on PATH, quiet, no tracking URI."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONWARNINGS"] = "ignore"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "litpipe tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@litpipe.invalid"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` with ``env`` (the pipeline environment unless given); show
    output on failure."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or pipeline_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def make_repo_copy(dest: Path) -> Path:
    """A fresh git + DVC repository holding the pipeline definition and stage entries."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ".dvc").mkdir(exist_ok=True)
    for name in REPO_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    # Code deps in dvc.yaml point at src/; a symlink keeps them real without copying.
    (dest / "src").symlink_to(ROOT / "src")
    run(["git", "init", "-q"], dest)
    run(["dvc", "config", "core.autostage", "false"], dest)
    (dest / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n")
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "pipeline copy"], dest)
    return dest


def edit_params(path: Path, edits: dict[str, object]) -> dict:
    """Set dotted keys (``{"optimizer.lr": 0.01}``) in the params file at ``path``, as
    ``dvc exp run -S`` does; return the whole edited mapping."""
    raw = yaml.safe_load(path.read_text())
    for dotted, value in edits.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


# A seconds-long run of the whole pipeline on scikit-learn's digits (offline).
TINY_DIGITS = {
    "data.dataset": "digits", "data.val_size": 200, "data.batch_size": 64,
    "trainer.max_epochs": 2, "trainer.enable_progress_bar": False,
    "callbacks.val_image_samples": 4, "evaluate.samples": 4, "export.parity_batch": 8,
}


def configure_tiny_digits(repo: Path, gate_rules: dict | None = None) -> None:
    """Set ``repo``'s params.yaml to TINY_DIGITS (and ``gate_rules``, if given); commit it."""
    edits: dict[str, object] = dict(TINY_DIGITS)
    if gate_rules is not None:
        edits["gates.rules"] = gate_rules
    edit_params(repo / "params.yaml", edits)
    run(["git", "commit", "-qam", "tiny digits config"], repo)
