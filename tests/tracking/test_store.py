"""litpipe.tracking.store: where runs go (the repo-root SQLite default, env override), and a
dead server failing fast."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from litpipe.schema import TrackingConfig
from litpipe.tracking.client import TrackingError
from litpipe.tracking.store import check_store, resolve_tracking_uri
from tests.helpers.repo import ROOT, pipeline_env


def test_default_is_sqlite_at_repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    expected = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri(TrackingConfig(uri=None, experiment="litpipe")) == expected


def test_dvc_root_wins_over_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Queued experiments run in .dvc/tmp/exps/tmpXXXX; their runs belong to the real repo."""
    exp_copy = tmp_path / ".dvc/tmp/exps/tmpabc"
    exp_copy.mkdir(parents=True)
    (exp_copy / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(exp_copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    expected = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri(TrackingConfig(uri=None, experiment="litpipe")) == expected


def test_env_then_param(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrackingConfig(uri="http://127.0.0.1:1", experiment="litpipe")
    assert resolve_tracking_uri(cfg) == "http://127.0.0.1:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:2")
    assert resolve_tracking_uri(cfg) == "http://127.0.0.1:2"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_store_refused() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TrackingError, match=f"{uri} is unreachable"):
        check_store(uri)


def test_check_store_silent_server_times_out() -> None:
    """A server that accepts connections but never answers must not hang the stage."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        with pytest.raises(TrackingError, match="unreachable"):
            check_store(uri, timeout=1.0)  # returns instead of waiting for an answer
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        sock.close()


@pytest.fixture
def processed_repo(tmp_path: Path) -> Path:
    """A directory with params.yaml and data/processed (digits) ready for the train stage."""
    from litpipe.data.split import split as split_stage
    from litpipe.params import load_params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update({"dataset": "digits", "val_size": 100})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data/raw/digits").mkdir(parents=True)
    split_stage(load_params(tmp_path / "params.yaml"), tmp_path / "data/raw",
                tmp_path / "data/processed")
    (tmp_path / "models").mkdir()
    (tmp_path / "models/best.ckpt").write_bytes(b"previous, complete checkpoint")
    return tmp_path


def test_train_stage_fails_fast_on_unreachable_server(processed_repo: Path) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": uri}
    # The stage checks the server before any training; the subprocess timeout only
    # catches a hang (the time it takes is measured in bench/, not asserted here).
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py")], cwd=processed_repo,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"MLflow tracking server {uri} is unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in (processed_repo / "models").iterdir()) == ["best.ckpt"]
    assert (processed_repo / "models/best.ckpt").read_bytes() == b"previous, complete checkpoint"
