"""Trained work is never lost and never redone, with real processes and real signals.

* ``kill -9`` of the train stage mid-training, then ``dvc repro``: it continues from the
  last completed epoch into the same MLflow run, and every output is byte-identical to an
  uninterrupted run of the same params.
* Ctrl-C (SIGINT): exit 130, the run KILLED, and the next run resumes it.
* Going back to params that were already run restores train, evaluate and export from DVC's
  run-cache: no stage runs, no MLflow run or model version is added.
* A full disk while writing the outputs: one line naming the file, the run FAILED, and the
  rerun writes the outputs without training again.
* Bad tracking stores and an empty params.yaml fail in seconds with one line.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.helpers.repo import ROOT, edit_params, pipeline_env, run
from tests.helpers.resume import EPOCHS, held_env, last_epoch, tiny_repo, wait_until

pytestmark = pytest.mark.e2e

OUTPUTS = ("models/best.ckpt", "models/last.ckpt", "reports/metrics.json",
           "reports/train_history.csv", "models/tuning.json", "models/export/model.onnx")


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines()
            if line.startswith("Running stage '")}


def db_rows(repo: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return db.execute(sql).fetchall()


def train_pid(repo: Path) -> int | None:
    """The pid of ``python stages/train.py`` running in ``repo`` (DVC's child)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"stages/train.py" in cmd and Path(cwd) == repo.resolve():
            return int(proc.name)
    return None


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted `dvc repro` of the same params: what every resumed run must equal."""
    repo = tiny_repo(tmp_path_factory.mktemp("reference") / "repo")
    run(["dvc", "repro"], repo)
    return repo


def test_kill_9_mid_training_resumes_to_identical_outputs(reference: Path, tmp_path: Path,
                                                           spawn: Callable) -> None:
    repo = tiny_repo(tmp_path / "repo")
    hold = tmp_path / "hold"
    proc = spawn(["dvc", "repro"], cwd=repo, env=held_env(hold, 3),
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: (hold / "held").exists(), "the training held at epoch 3")
    assert last_epoch(repo) == 2
    pid = train_pid(repo)
    assert pid is not None, "train stage process not found"
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    killed_at = last_epoch(repo)
    [(run_id, status)] = db_rows(repo, "select run_uuid, status from runs")
    assert status == "RUNNING"  # the killed process could not close it

    again = run(["dvc", "repro"], repo)
    assert f"(epoch {killed_at + 1} of {EPOCHS} done)" in again.stdout
    # The resumed run trained only the epochs that were left.
    epochs_run_again = again.stdout.count("litpipe train: epoch ")
    assert epochs_run_again == EPOCHS - killed_at - 1, again.stdout[-3000:]

    for out in OUTPUTS:
        assert (repo / out).read_bytes() == (reference / out).read_bytes(), out
    assert json.loads((repo / "models/run.json").read_text())["run_id"] == run_id
    assert db_rows(repo, "select run_uuid, status from runs") == [(run_id, "FINISHED")]
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        steps = [s for (s,) in db_rows(
            repo, f"select step from metrics where key='{key}' order by step")]
        assert steps == list(range(EPOCHS)), (key, steps)
    assert not list((repo / ".litpipe/resume").glob("*/")), "resume state left behind"


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "SIGINT (Ctrl-C)"),
                                           (signal.SIGTERM, "SIGTERM")])
def test_a_signal_stops_training_names_itself_marks_the_run_killed_and_resumes(
        reference: Path, tmp_path: Path, sig: int, name: str, spawn: Callable) -> None:
    """SIGINT (Ctrl-C) and SIGTERM (kill, SLURM, Kubernetes): exit 128 + the signal, the
    run KILLED, one line naming the signal; the next `dvc repro` resumes. The signal is
    sent while the training is held at an epoch boundary, so it always lands mid-training
    (it used to be sent after a checkpoint appeared, and lost the race on a slow CPU when
    the tiny training had already ended)."""
    repo = tiny_repo(tmp_path / "repo")
    run(["dvc", "repro", "split"], repo)
    hold = tmp_path / "hold"
    proc = spawn([sys.executable, "stages/train.py"], cwd=repo, env=held_env(hold, 2),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: (hold / "held").exists(), "the training held at epoch 2")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"litpipe train: error: stopped by {name};" in err
    assert "Traceback" not in err
    [(run_id, status)] = db_rows(repo, "select run_uuid, status from runs")
    assert status == "KILLED"

    again = run(["dvc", "repro"], repo)
    assert f"(epoch 2 of {EPOCHS} done)" in again.stdout
    assert db_rows(repo, "select run_uuid, status from runs") == [(run_id, "FINISHED")]
    assert (repo / "reports/metrics.json").read_bytes() == \
        (reference / "reports/metrics.json").read_bytes()


def test_params_edited_during_training_are_never_recorded(tmp_path: Path,
                                                         spawn: Callable) -> None:
    """Issue 20, case 1: DVC reads params.yaml again when it records a finished stage, so
    an edit made while train ran (by hand, or by a `dvc exp run -S` DVC refused) used to be
    recorded in dvc.lock for a model trained with the old value. The stage now fails, DVC
    records nothing, and the next `dvc repro` trains with the new value: dvc.lock and the
    MLflow run always agree."""
    repo = tiny_repo(tmp_path / "repo")
    edit_params(repo / "params.yaml", {"optimizer.weight_decay": 0.0003})
    hold = tmp_path / "hold"
    proc = spawn(["dvc", "repro"], cwd=repo, env=held_env(hold, 1),
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: (hold / "held").exists(), "the training held at epoch 1")
    edit_params(repo / "params.yaml", {"optimizer.weight_decay": 0.0004})
    (hold / "release").touch()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, out[-3000:]
    assert "litpipe train: error: params.yaml changed while the stage ran" in out

    def agree() -> float | None:
        lock = yaml.safe_load((repo / "dvc.lock").read_text()) if \
            (repo / "dvc.lock").exists() else {}
        recorded = lock.get("stages", {}).get("train", {}).get("params", {})
        recorded = recorded.get("params.yaml", {}).get("optimizer", {})
        run_ids = {r for (r,) in db_rows(repo, "select run_uuid from runs")}
        logged = {r: v for r, v in db_rows(
            repo, "select run_uuid, value from params where key='optimizer.weight_decay'")}
        if recorded:  # what dvc.lock says train ran with is what the run it names logged
            run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
            assert run_id in run_ids
            assert float(logged[run_id]) == recorded["weight_decay"]
        return recorded.get("weight_decay")

    assert agree() is None  # nothing recorded for train
    again = run(["dvc", "repro"], repo)
    assert "Running stage 'train'" in again.stdout
    assert agree() == 0.0004
def test_going_back_to_params_restores_from_the_run_cache(tmp_path: Path) -> None:
    repo = tiny_repo(tmp_path / "repo")
    run(["dvc", "repro"], repo)
    first_run = json.loads((repo / "models/run.json").read_text())["run_id"]
    first_metrics = (repo / "reports/metrics.json").read_bytes()
    base_lr = yaml.safe_load((repo / "params.yaml").read_text())["optimizer"]["lr"]
    edit_params(repo / "params.yaml", {"optimizer.lr": base_lr * 1.5})
    run(["dvc", "repro"], repo)
    assert len(db_rows(repo, "select run_uuid from runs")) == 2

    edit_params(repo / "params.yaml", {"optimizer.lr": base_lr})
    t0 = time.monotonic()
    back = run(["dvc", "repro"], repo)
    restored_s = time.monotonic() - t0
    assert ran_stages(back.stdout) <= {"validate"}, back.stdout
    for stage in ("train", "evaluate", "export"):
        assert f"Stage '{stage}' is cached - skipping run" in back.stdout, back.stdout
    assert len(db_rows(repo, "select run_uuid from runs")) == 2  # no new run ...
    assert len(db_rows(repo, "select version from model_versions")) == 2  # ... or version
    assert json.loads((repo / "models/run.json").read_text())["run_id"] == first_run
    assert (repo / "reports/metrics.json").read_bytes() == first_metrics
    assert run(["dvc", "status"], repo).stdout.strip().endswith("up to date.")
    print(f"restored from the run-cache in {restored_s:.1f} s")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_while_writing_outputs_keeps_the_trained_model(tmp_path: Path) -> None:
    repo = tiny_repo(tmp_path / "repo")
    run(["dvc", "repro", "split"], repo)
    models = repo / "models"
    models.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(models)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        proc = subprocess.run([sys.executable, "stages/train.py"], cwd=repo,
                              env=pipeline_env(), capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["umount", str(models)], check=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("litpipe train: error:")]
    assert "No space left on device" in line and "models" in line
    assert "without training again" in line and "Traceback" not in proc.stderr
    [(status,)] = db_rows(repo, "select status from runs")
    assert status == "FAILED"

    again = run(["dvc", "repro"], repo)
    assert "training had finished" in again.stdout
    assert "litpipe train: epoch " not in again.stdout
    assert db_rows(repo, "select status from runs") == [("FINISHED",)]
    assert (repo / "models/best.ckpt").stat().st_size > 0


def stage_error(repo: Path, env: dict[str, str], timeout: float) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "stages/train.py"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("litpipe train: error:")]
    assert took < timeout, f"took {took:.1f} s"
    return line, took


@pytest.fixture(scope="module")
def split_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tiny_repo(tmp_path_factory.mktemp("split") / "repo")
    run(["dvc", "repro", "split"], repo)
    return repo


def test_unwritable_sqlite_fails_in_seconds_naming_the_file(split_repo: Path) -> None:
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": "sqlite:////proc/x.db"}
    line, _ = stage_error(split_repo, env, timeout=15)  # python + torch start-up included
    assert "/proc/x.db" in line


def test_corrupt_sqlite_db_names_the_file(split_repo: Path, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    line, _ = stage_error(split_repo, env, timeout=15)
    assert str(db) in line and "cannot be used" in line


class _HalfAlive(BaseHTTPRequestHandler):
    """/health answers; the API never does (a wedged server behind a healthy proxy)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith("/health"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
        else:
            time.sleep(60)

    def log_message(self, *args: object) -> None:
        pass


def test_half_alive_server_fails_fast_naming_the_uri(split_repo: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HalfAlive)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        env = {**pipeline_env(), "MLFLOW_TRACKING_URI": uri}
        line, _ = stage_error(split_repo, env, timeout=30)
    finally:
        server.shutdown()
    assert uri in line and "API does not respond" in line
    assert not (split_repo / "models").exists()


def test_empty_params_yaml_is_an_error_and_touches_nothing(split_repo: Path,
                                                            tmp_path: Path) -> None:
    for text in ("", "null\n", "[1, 2]\n"):
        (tmp_path / "params.yaml").write_text(text)
        proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py")], cwd=tmp_path,
                              env=pipeline_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "params.yaml" in proc.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
