"""A tracking server that dies mid-training costs no trained epoch.

The PostgreSQL-backed stack of ``scripts/mlflow_server.sh`` serves a tiny training; its
MLflow server is killed (``kill -9``) after the first epoch. Training goes on, what it logs
waits in the resume directory's outbox, and the stage ends within a bounded time with one
line saying the model is kept. With the server back (same port, same database), the next
run sends the queued metrics and writes the outputs without training again: one FINISHED run
with every epoch's point.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.repo import ROOT, pipeline_env, run
from tests.helpers.resume import EPOCHS, last_epoch, tiny_repo, wait_until
from tests.helpers.servers import stack_unavailable

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "scripts/mlflow_server.sh"
BOUND_S = 120  # kill of the server → the stage has ended (training included)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FixedPortStack:
    """The stack on a fixed port, so that a restarted server has the same URI."""

    def __init__(self) -> None:
        # PostgreSQL runs as the `postgres` user, which must be able to enter the directory
        # for the cluster to live in it and survive a stop/start.
        self.dir = Path(tempfile.mkdtemp(prefix="litpipe-outage-"))
        os.chmod(self.dir, 0o755)
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # Without logins (loopback only): this file is about outages; logins are
        # tests/e2e/test_tracking_server.py's.
        env = {**os.environ, "MLFLOW_PORT": str(self.port), "OWNER_PID": str(os.getpid()),
               "MLFLOW_AUTH": "off"}
        subprocess.run([str(SCRIPT), "start", str(self.dir)], env=env, check=True,
                       capture_output=True, text=True, timeout=300)

    def kill_server(self) -> None:
        """``kill -9`` of the MLflow server's process group; PostgreSQL stays up."""
        pgid = int((self.dir / "mlflow.pid").read_text())
        os.killpg(pgid, signal.SIGKILL)

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", str(self.dir)], capture_output=True, timeout=120)


@pytest.fixture
def stack() -> Iterator[FixedPortStack]:
    why = stack_unavailable()
    if why:
        pytest.skip(why)
    s = FixedPortStack()
    s.start()
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


def test_server_killed_mid_training_keeps_the_model(stack: FixedPortStack, tmp_path: Path,
                                                    spawn: Callable) -> None:
    from mlflow.tracking import MlflowClient

    repo = tiny_repo(tmp_path / "repo")
    run(["dvc", "repro", "split"], repo)
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": stack.uri}
    proc = spawn([sys.executable, "stages/train.py"], cwd=repo, env=env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: last_epoch(repo) >= 0, "the first epoch's checkpoint")
    stack.kill_server()
    killed = time.monotonic()
    out, err = proc.communicate(timeout=BOUND_S + 60)
    took = time.monotonic() - killed
    assert proc.returncode == 2, err[-3000:]
    assert took < BOUND_S, f"the stage took {took:.0f} s after the server died"
    assert out.count("litpipe train: epoch ") == EPOCHS  # training went on to the end
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("litpipe train: error:")]
    assert stack.uri in line and "training finished and is kept in" in line
    [resume] = list((repo / ".litpipe/resume").glob("*/"))
    assert (resume / "finished.json").is_file() and (resume / "outbox.jsonl").is_file()

    # The server is back: the rerun sends what waited and writes the outputs, no training.
    stack.stop()
    stack.start()
    again = subprocess.run([sys.executable, "stages/train.py"], cwd=repo, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training had finished" in again.stdout
    assert "litpipe train: epoch " not in again.stdout
    client = MlflowClient(tracking_uri=stack.uri)
    [r] = client.search_runs([client.get_experiment_by_name("litpipe").experiment_id])
    assert r.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "val_acc"):
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, key))
        assert steps == list(range(EPOCHS)), (key, steps)
    assert (repo / "models/best.ckpt").is_file()
    assert not list((repo / ".litpipe/resume").glob("*/"))
