"""Shared fixtures: a tiny processed dataset and a throw-away copy of the repository."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Files a pipeline copy needs; data/, models/, reports/ and the MLflow DB stay behind.
REPO_FILES = ("dvc.yaml", "params.yaml", "stages", "pyproject.toml")


def _executable(name: str) -> bool:
    path = shutil.which(name) or f"/usr/bin/{name}"
    return os.access(path, os.X_OK)


# The system (apt) packages `setup.sh --dev` installs for the tests, each with how the tests
# find it. Where one is missing, the tests that need it skip, saying why: right on a laptop,
# wrong in CI, where the suite would pass without running them. So under CI=true (GitHub
# Actions sets it, .ci/run exports it) the session fails at its start instead, naming them.
SYSTEM_PACKAGES = {
    "postgresql": lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")),
    "chromium": lambda: _executable("chromium"),
    "chromium-driver": lambda: _executable("chromedriver"),
    "dataset-fashion-mnist": lambda: Path("/usr/share/datasets/fashion-mnist").is_dir(),
}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI=true, a system package the tests need must be there (see SYSTEM_PACKAGES)."""
    if os.environ.get("CI", "").lower() != "true":
        return
    missing = [name for name, present in SYSTEM_PACKAGES.items() if not present()]
    if missing:
        pytest.exit(f"CI=true and the system package(s) {', '.join(missing)} are missing: "
                    "their tests would only be skipped. Install them (./setup.sh --dev) "
                    "or run without CI=true.", returncode=3)


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may write into a developer's real MLflow store or DVC repo by accident."""
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)


def pipeline_env() -> dict[str, str]:
    """Environment for subprocess stages: the venv first on PATH, quiet, no tracking URI."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONWARNINGS"] = "ignore"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "litpipe tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@litpipe.invalid"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600
        ) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` with the pipeline environment; show output on failure."""
    proc = subprocess.run(cmd, cwd=cwd, env=pipeline_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def make_repo_copy(dest: Path) -> Path:
    """A fresh git + DVC repository holding the pipeline definition and stage entries."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    # Code deps in dvc.yaml point at src/; a symlink keeps them real without copying.
    (dest / "src").symlink_to(ROOT / "src")
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
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


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scikit-learn's digits through the real split stage (200 held out for validation)."""
    from litpipe.data.split import split as split_stage
    from litpipe.params import load_params

    base = tmp_path_factory.mktemp("digits")
    (base / "raw/digits").mkdir(parents=True)
    split_stage(load_params(ROOT / "params.yaml", overrides={
        "data.dataset": "digits", "data.val_size": 200}), base / "raw", base / "processed")
    return base / "processed"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, made the current one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A throw-away repository to run ``dvc repro`` in."""
    return make_repo_copy(tmp_path / "repo")


def _queue_diagnostics(repo: Path) -> str:
    """What a stuck queue left behind: its status, and the tail of every worker's and
    experiment's log under .dvc/tmp/exps (where DVC's queue writes them)."""
    parts = [run(["dvc", "queue", "status"], repo, check=False).stdout]
    for log in sorted((repo / ".dvc/tmp/exps").rglob("*.out")):
        text = log.read_text(errors="replace")
        parts.append(f"--- {log.relative_to(repo)} (last 2000 chars)\n{text[-2000:]}")
    return "\n".join(parts)


def _kill_workers(repo: Path) -> None:
    """Kill the queue's worker processes still alive (DVC records each one's pid in
    .dvc/tmp/exps/celery/*.json, and its returncode once it has exited): an idle worker
    otherwise lingers for its monitor's timeout, and a stuck one for ever."""
    for record in (repo / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"):
        info = json.loads(record.read_text())
        cmdline = Path(f"/proc/{info['pid']}/cmdline")
        if info.get("returncode") is None and cmdline.exists() \
                and b"queue-worker" in cmdline.read_bytes():
            os.kill(info["pid"], signal.SIGKILL)


def run_queue(repo: Path, jobs: int = 1, env: dict[str, str] | None = None,
              deadline_s: float = 420) -> str:
    """`dvc queue start -j jobs`, then wait until nothing is queued or running; return the
    final `dvc queue status`.

    The workers are daemons that inherit the starting command's stdout, so the command's
    output goes to a file: capturing it through a pipe would block until the last worker
    exits. DVC's workers sometimes all exit with experiments still queued (DVC issue 10562);
    the documented remedy is another `dvc queue start`, done here when no worker is left.
    Past the deadline the workers are killed and the failure shows their logs, so a hang
    costs minutes of CI, not the whole budget, and says where it was.
    """
    env = env or pipeline_env()
    log = repo / ".dvc/tmp/queue-start.log"

    def start() -> None:
        with open(log, "a") as out:
            subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=env,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           timeout=120, check=True)

    start()
    end = time.monotonic() + deadline_s
    restarts = idle_polls = 0
    try:
        while time.monotonic() < end:
            time.sleep(3)
            status = run(["dvc", "queue", "status"], repo).stdout
            if "Queued" not in status and "Running" not in status:
                return status
            # Workers take seconds to register: only a queue seen without one for a while
            # (DVC's idle workers wait 10 s for work before they exit) is restarted.
            stalled = "Running" not in status and "0 active, 0 idle" in status
            idle_polls = idle_polls + 1 if stalled else 0
            if idle_polls >= 5 and restarts < 3:
                restarts, idle_polls = restarts + 1, 0
                start()
        diagnostics = _queue_diagnostics(repo)
        run(["dvc", "queue", "stop", "--kill"], repo, check=False, timeout=60)
    finally:
        _kill_workers(repo)
    raise AssertionError(f"queue did not finish in {deadline_s:g} s:\n{diagnostics}")


