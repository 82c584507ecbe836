"""litpipe/stage.py: how every stage ends: one line and a status, never something false."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from litpipe.stage import stage
from tests.helpers.repo import ROOT, pipeline_env

# A stage that says when it is inside its block, then waits there: a signal sent after
# "ready" exists is sure to land inside the stage (no race with the machine's speed).
WAITING_STAGE = """
import pathlib, sys, time
from litpipe.stage import stage
with stage("demo") as run:
    if len(sys.argv) > 1:  # edit params.yaml while the stage runs
        p = pathlib.Path("params.yaml")
        p.write_text(p.read_text().replace("seed: 42", "seed: 43"))
    else:
        pathlib.Path("ready").touch()
        time.sleep(120)
"""


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return subprocess.Popen([sys.executable, "-c", WAITING_STAGE, *args], cwd=tmp_path,
                            env=pipeline_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the stage never got ready"
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGTERM, "SIGTERM"),
                                           (signal.SIGINT, "SIGINT (Ctrl-C)")])
def test_the_signal_that_stopped_a_stage_is_named(tmp_path: Path, sig: int, name: str) -> None:
    """Issue 20, case 8: SIGTERM (SLURM, Kubernetes, kill) was reported as Ctrl-C."""
    proc = _start(tmp_path)
    _wait_for(tmp_path / "ready", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert err.strip().splitlines()[-1].startswith(f"litpipe demo: error: stopped by {name};")


def test_params_changed_while_a_stage_ran_fail_it(tmp_path: Path) -> None:
    """Issue 20, case 1 (the runner's part): DVC would record the new file for outputs the
    old one made; the stage fails instead, so DVC records nothing."""
    proc = _start(tmp_path, "edit")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "params.yaml changed while the stage ran" in err
    assert "done in" not in out


@pytest.mark.parametrize(("code", "why"), [(errno.ENOSPC, "the disk is full"),
                                           (errno.EROFS, "the file system is read-only"),
                                           (errno.EACCES, "permission denied")])
def test_a_disk_error_is_one_line_naming_the_file(tmp_path: Path, monkeypatch, capsys,
                                                  code: int, why: str) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    with pytest.raises(SystemExit) as info, stage("demo"):
        raise OSError(code, os.strerror(code), "reports/metrics.json")
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"litpipe demo: error: cannot write reports/metrics.json: {why}; free space "
                   "or fix the permissions, then run `dvc repro` again"]


def test_other_os_errors_keep_their_traceback(tmp_path: Path, monkeypatch) -> None:
    """A bug is a bug: only the disk's refusals become one line."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    with pytest.raises(ConnectionResetError), stage("demo"):
        raise ConnectionResetError(errno.ECONNRESET, "reset")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits model as the train stage leaves it: processed data, best.ckpt, run.json."""
    from tests.helpers.models import train_checkpoint
    from tests.helpers.registry import new_run

    base = tmp_path_factory.mktemp("trained")
    train_checkpoint(base)
    new_run(base)
    return base


@pytest.mark.parametrize("entry", ["validate", "split", "evaluate", "export"])
def test_each_stage_ends_in_one_line_on_a_read_only_disk(tmp_path: Path, trained: Path,
                                                          entry: str) -> None:
    """Issue 20, case 5, stage by stage: the entries themselves, as DVC runs them, with
    every rename refused as a read-only file system refuses it (a root user cannot be kept
    out by permissions). The train stage's own test is tests/e2e/test_resume.py's full
    disk."""
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copy(ROOT / "params.ci.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    (tmp_path / "data/raw/digits").mkdir(parents=True)  # the digits need no download
    if entry in ("evaluate", "export"):
        shutil.copytree(trained / "processed", tmp_path / "data/processed")
        shutil.copytree(trained / "models", tmp_path / "models")
    code = ("import errno, os, runpy, sys\n"
            "def refuse(*a, **k):\n"
            "    raise OSError(errno.EROFS, os.strerror(errno.EROFS))\n"
            "os.replace = refuse\n"
            f"sys.argv = ['stages/{entry}.py']\n"
            f"runpy.run_path('stages/{entry}.py', run_name='__main__')\n")
    env = {**pipeline_env(), "DVC_ROOT": str(trained)}  # the run's artifacts: trained's
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines()
             if line.startswith("litpipe ") or "Traceback" in line]
    assert len(lines) == 1 and "the file system is read-only" in lines[0], proc.stderr[-3000:]
    assert f"litpipe {entry}: error: cannot write " in lines[0]
