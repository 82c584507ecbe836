"""The pipeline against a real tracking server, and a dead server stopping the train stage.

A team's MLflow is a server with a database behind it, not the SQLite file the tests use
elsewhere: here `scripts/mlflow_server.sh` starts `mlflow server` on Debian's PostgreSQL with
artifacts served over HTTP (`--serve-artifacts`), all on loopback, and `dvc repro` of a tiny
digits config runs with `MLFLOW_TRACKING_URI` pointing at it. Everything is then read back the
way a user would, through the server's REST API, plus one look into PostgreSQL itself to show
that is where the run really went.

A server that is down, or that accepts connections and never answers, must stop the train
stage within seconds (exit 2, the URI in the message) and leave `models/` untouched, instead
of training for minutes and failing at the first log call.

The stack has logins (MLflow's auth app), so the pipeline runs as the CI identity the script
creates (`add-user ci --edit`), the test reads as the admin, and the last tests check what
the logins are for: anonymous clients get 401 and a READ login 403 for deleting the model or
a run, moving an alias or uploading an artifact; only the gate's login moves `champion`; a
wrong password stops `dvc repro` at its first MLflow stage in one line, after one request;
no password shows in `ps`, in a log or in a file other users can read; and the server
reports no telemetry.

The stack boots in the background (about 20 s: PostgreSQL plus MLflow's schema migrations)
while the dead-server tests run, which keeps this file near a minute. Where PostgreSQL or
psycopg2 is missing, the server test is skipped, saying which; the dead-server tests need
neither.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.dvc_queue import run_queue
from tests.helpers.repo import configure_tiny_digits, make_repo_copy, pipeline_env, run
from tests.helpers.servers import SCRIPT, Stack, stack_unavailable

pytestmark = pytest.mark.e2e

FAIL_FAST_S = 15.0  # the train stage must give up on a dead server within this


@pytest.fixture(scope="module", autouse=True)
def _boot_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack | None]:
    """Start booting the stack as the module starts, so the boot overlaps the other tests."""
    if stack_unavailable():
        yield None
        return
    stack = Stack(tmp_path_factory.mktemp("mlflow-stack"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def tracking_server(_boot_stack: Stack | None) -> Stack:
    """The running stack, with its three logins: reader (READ), ci (EDIT), gate (champion)."""
    reason = stack_unavailable()
    if reason or _boot_stack is None:
        pytest.skip(reason or "stack not started")
    _boot_stack.uri()
    for name, role in (("reader", "--read"), ("ci", "--edit"), ("gate", "--gate")):
        if name not in _boot_stack.users:
            _boot_stack.add_user(name, role)
    return _boot_stack


def tiny_repo(dest: Path) -> Path:
    """A repository copy configured for a seconds-long digits run, params committed."""
    repo = make_repo_copy(dest)
    configure_tiny_digits(repo)
    return repo


def tree(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``path`` with its bytes and mtime: "untouched" means equal trees."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


# --- a dead tracking server stops the train stage -------------------------------------------

@pytest.fixture(scope="module")
def split_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo copy after `dvc repro split`, with outputs of an earlier train run in models/."""
    repo = tiny_repo(tmp_path_factory.mktemp("dead-server") / "repo")
    run(["dvc", "repro", "split"], repo, timeout=120)
    (repo / "models").mkdir()
    (repo / "models/best.ckpt").write_bytes(b"an earlier, complete checkpoint")
    (repo / "models/run.json").write_text('{"run_id": "earlier"}\n')
    return repo


@pytest.fixture
def refused_uri() -> str:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_uri() -> Iterator[str]:
    """A socket that listens (the kernel completes the TCP handshake) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("server", ["refused_uri", "silent_uri"])
def test_dead_server_stops_train_stage_fast(server: str, split_repo: Path,
                                            request: pytest.FixtureRequest) -> None:
    uri = request.getfixturevalue(server)
    models_before = tree(split_repo / "models")
    reports = split_repo / "reports"
    reports_before = tree(reports) if reports.exists() else None
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": uri}

    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "stages/train.py"], cwd=split_repo, env=env,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0

    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert elapsed < FAIL_FAST_S, f"train stage took {elapsed:.1f} s to give up on {uri}"
    assert f"MLflow tracking server {uri} is unreachable" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree(split_repo / "models") == models_before  # nothing created, changed or removed
    assert (tree(reports) if reports.exists() else None) == reports_before


# --- the whole pipeline against the PostgreSQL-backed server --------------------------------

@pytest.fixture(scope="module")
def repro(tracking_server: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc repro` of the tiny config with MLFLOW_TRACKING_URI set to the server, logged in
    as the CI identity (EDIT: runs, artifacts, versions, `candidate`)."""
    repo = tiny_repo(tmp_path_factory.mktemp("server-repro") / "repo")
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": tracking_server.uri(),
           **tracking_server.login("ci")}
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return repo


def test_one_complete_run_on_the_server(tracking_server: Stack, repro: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    uri, repo = tracking_server.uri(), repro
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # any default MLflow picks is the server
    for key, value in tracking_server.login("admin").items():  # the test reads everything
        monkeypatch.setenv(key, value)
    summary = json.loads((repo / "models/run.json").read_text())
    assert summary["tracking_uri"] == uri
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()

    client = MlflowClient(tracking_uri=uri)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    [run_] = client.search_runs(exp_ids)  # exactly one run on the server
    run_id = run_.info.run_id
    assert run_id == summary["run_id"] and run_.info.status == "FINISHED"
    assert client.get_experiment(run_.info.experiment_id).name == "litpipe"

    # Params: all of params.yaml, flattened.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert run_.data.params["data.dataset"] == "digits"
    assert run_.data.params["trainer.max_epochs"] == "2"
    assert run_.data.params["optimizer.lr"] == str(params["optimizer"]["lr"])
    stats = json.loads((repo / "data/processed/stats.json").read_text())
    assert run_.data.tags["dataset.hash"] == stats["data_hash"]

    # Per-epoch curves, step = epoch, equal to the stage's own history file.
    with open(repo / "reports/train_history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert len(history) == 2
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        points = client.get_metric_history(run_id, key)
        assert [m.step for m in points] == [0, 1], key
        assert [m.value for m in points] == pytest.approx(
            [float(row[key]) for row in history], rel=1e-5), key

    # Test metrics, equal to reports/metrics.json.
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for key in ("test_acc", "test_macro_f1", "test_loss"):
        assert run_.data.metrics[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert "onnx_max_abs_diff" in run_.data.metrics

    # Artifacts went through the server (proxied URI, files in its artifacts directory)
    # and come back byte for byte.
    assert run_.info.artifact_uri.startswith("mlflow-artifacts:"), run_.info.artifact_uri
    listed = {f.path for d in ("evaluate", "config", "checkpoint", "export", "val_predictions")
              for f in client.list_artifacts(run_id, d)}
    assert {"evaluate/samples.png", "evaluate/confusion.png", "evaluate/metrics.json",
            "config/params.yaml", "checkpoint/best.ckpt", "export/model.onnx",
            "val_predictions/epoch_000.png", "val_predictions/epoch_001.png"} <= listed
    got = Path(client.download_artifacts(run_id, "evaluate/samples.png", str(tmp_path)))
    assert got.read_bytes() == (repo / "reports/samples.png").read_bytes()
    on_server = list((tracking_server.dir / "artifacts").rglob("evaluate/samples.png"))
    assert [p.read_bytes() for p in on_server] == [got.read_bytes()]

    # The served model (a pyfunc around the ONNX file), registered as version 1 with the
    # alias candidate, downloaded from the server's registry the way a user would: the
    # `mlflow` CLI in a fresh process, told only MLFLOW_TRACKING_URI and a READ login (what
    # `mlflow models serve` needs). (In this process,
    # earlier tests' in-process export stages have set MLflow's global tracking URI, which
    # `models:/` resolution would use instead.)
    [version] = client.search_model_versions("name='litpipe-classifier'")
    assert (version.version, version.run_id) == ("1", run_id)
    model_dir = tmp_path / "model"
    fetched = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "artifacts", "download",
         "--artifact-uri", "models:/litpipe-classifier/1", "--dst-path", str(model_dir)],
        env={**pipeline_env(), "MLFLOW_TRACKING_URI": uri, **tracking_server.login("reader")},
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    # MLflow 3: the files belong to a logged model, whose source run is this run (the model
    # is logged outside the run, so MLflow links no step-0 metrics to it: served.py).
    assert client.get_logged_model(mlmodel["model_id"]).source_run_id == run_id
    assert "python_function" in mlmodel["flavors"]
    assert mlmodel["signature"]["inputs"] and (model_dir / "artifacts/model.onnx").is_file()
    # What `litpipe gate --promote` reads through the server: the run's version, by run id,
    # with the SHA-256 of the export it holds (search results carry tags, not aliases).
    from litpipe.tracking import models

    assert client.get_model_version("litpipe-classifier", "1").aliases == ["candidate"]
    [(found, sha)] = models.versions_of_run("litpipe-classifier", run_id, uri)
    assert found.version == "1"
    assert sha == models.file_sha256(repo / "models/export/model.onnx")

    # And the backend store really is PostgreSQL.
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=int((tracking_server.dir / "pg_port")
                                                       .read_text()),
                            user="mlflow", dbname="mlflow", connect_timeout=10,
                            password=(tracking_server.dir / "pg_password").read_text().strip())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT run_uuid, status FROM runs")
            assert cur.fetchall() == [(run_id, "FINISHED")]
            cur.execute("SELECT name, version, run_id FROM model_versions")
            assert cur.fetchall() == [("litpipe-classifier", 1, run_id)]
    finally:
        conn.close()


def test_queued_experiments_land_on_the_server(tracking_server: Stack, repro: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `dvc exp run --queue` experiments, run side by side (`-j 2`, as a team queues
    them): their workers run in temporary workspaces and inherit MLFLOW_TRACKING_URI (and
    the CI login) from `dvc queue start`, so they must land on the server too, each
    complete, each with its own registered model version, and nothing stray."""
    from mlflow.tracking import MlflowClient

    uri, repo = tracking_server.uri(), repro
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": uri, **tracking_server.login("ci")}
    for key, value in tracking_server.login("admin").items():  # the test reads everything
        monkeypatch.setenv(key, value)

    def dvc(*args: str) -> str:
        proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline run"], repo)
    for lr in ("0.001", "0.006"):  # params.yaml has 0.004
        dvc("exp", "run", "--queue", "-S", f"optimizer.lr={lr}")
    status = run_queue(repo, jobs=2, env=env)
    assert "Failed" not in status and status.count("Success") == 2, status
    assert not (repo / "mlflow.db").exists()  # nothing went to the embedded default

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("litpipe")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["0.001", "0.004", "0.006"]
    for r in runs:  # every run complete: curves, test metrics, export parity, artifacts
        assert r.info.status == "FINISHED"
        assert {"train_loss", "val_acc", "test_acc", "onnx_max_abs_diff"} <= set(r.data.metrics)
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")] == [0, 1]
        listed = {f.path for f in client.list_artifacts(r.info.run_id, "evaluate")}
        assert "evaluate/samples.png" in listed, listed
    queued = [r for r in runs if r.data.params["optimizer.lr"] != "0.004"]
    assert all(r.data.tags.get("dvc.exp_name") for r in queued)
    versions = client.search_model_versions("name='litpipe-classifier'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)


# --- logins: who may do what -------------------------------------------------------------

def call(uri: str, method: str, path: str, login: dict[str, str] | None,
         body: dict | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    """The HTTP status and body the server answers a raw request with (curl's view)."""
    headers = {"Content-Type": "application/octet-stream" if data else "application/json"}
    if login:
        pair = f"{login['MLFLOW_TRACKING_USERNAME']}:{login['MLFLOW_TRACKING_PASSWORD']}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    payload = data if data is not None else json.dumps(body).encode() if body else None
    request = urllib.request.Request(uri + path, data=payload, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_anonymous_and_read_only_clients_change_nothing(tracking_server: Stack, repro: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """What issue 21 did with curl, refused: deleting the registered model or a run, moving
    `champion`, uploading into a run's artifacts. 401 without a login, 403 with a READ one;
    the CI login may neither delete nor move `champion` either."""
    from mlflow.tracking import MlflowClient

    uri = tracking_server.uri()
    run_id = json.loads((repro / "models/run.json").read_text())["run_id"]
    for key, value in tracking_server.login("admin").items():  # the test's own reads
        monkeypatch.setenv(key, value)
    admin = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_id = admin.get_run(run_id).info.experiment_id
    writes = {
        "delete the model": ("DELETE", "/api/2.0/mlflow/registered-models/delete",
                             {"name": "litpipe-classifier"}, None),
        "delete a run": ("POST", "/api/2.0/mlflow/runs/delete", {"run_id": run_id}, None),
        "move champion": ("POST", "/api/2.0/mlflow/registered-models/alias",
                          {"name": "litpipe-classifier", "alias": "champion", "version": "1"},
                          None),
        "upload an artifact": ("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{run_id}/"
                               "artifacts/planted.txt", None, b"not yours"),
    }
    expected = {None: 401, "reader": 403}
    got = {who: {what: call(uri, method, path, tracking_server.login(who) if who else None,
                            body, data)[0]
                 for what, (method, path, body, data) in writes.items()}
           for who in expected}
    assert got == {who: dict.fromkeys(writes, status) for who, status in expected.items()}
    for what in ("delete the model", "delete a run", "move champion"):
        method, path, body, data = writes[what]
        assert call(uri, method, path, tracking_server.login("ci"), body, data)[0] == 403, what
    # Nothing changed: the model and its version, the run, no champion, no planted file.
    assert admin.get_model_version("litpipe-classifier", "1").run_id == run_id
    assert "champion" not in admin.get_registered_model("litpipe-classifier").aliases
    assert admin.get_run(run_id).info.lifecycle_stage == "active"
    assert not list((tracking_server.dir / "artifacts").rglob("planted.txt"))


def test_only_the_gate_moves_champion(tracking_server: Stack, repro: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`litpipe gate --promote`'s promotion as the CI login: one line naming the server and
    the refusal; as the gate's login: `champion` moves."""
    from litpipe.gate.promote import promote
    from litpipe.tracking import models
    from litpipe.tracking.client import TrackingError

    uri = tracking_server.uri()
    metrics = json.loads((repro / "reports/metrics.json").read_text())
    gated = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    for key, value in tracking_server.login("ci").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(TrackingError) as refused:
        promote(repro, "litpipe-classifier", gated)
    text = str(refused.value)
    assert "\n" not in text and uri in text and "cannot set alias 'champion'" in text, text
    assert "HTTP 403, user 'ci' has no permission" in text, text

    for key, value in tracking_server.login("gate").items():
        monkeypatch.setenv(key, value)
    assert "to @champion" in promote(repro, "litpipe-classifier", gated)
    assert models.resolve("models:/litpipe-classifier@champion", uri).version == "1"


def test_wrong_password_stops_dvc_repro_in_one_line(tracking_server: Stack, split_repo: Path,
                                                    tmp_path: Path) -> None:
    """Acceptance: the train stage (the first that talks to MLflow) fails on its first
    request, before torch loads: one line, exit 2, one refused request in the server's log
    (no retries), nothing written to models/."""
    repo = Path(shutil.copytree(split_repo, tmp_path / "repo", symlinks=True))
    uri = tracking_server.uri()
    log = tracking_server.dir / "mlflow.log"
    refused_before = log.read_text().count('" 401')
    models_before = tree(repo / "models")
    wrong = secrets.token_hex(12)  # not ci's password (made here: none is committed)
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": uri,
           "MLFLOW_TRACKING_USERNAME": "ci", "MLFLOW_TRACKING_PASSWORD": wrong}

    t0 = time.monotonic()
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)
    elapsed = time.monotonic() - t0
    print(f"dvc repro with a wrong password failed after {elapsed:.1f} s")  # reported, -rP

    errors = [line for line in proc.stderr.splitlines() if line.startswith("litpipe ")]
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert errors == [f"litpipe train: error: MLflow tracking server {uri} refused a search of "
                      "its experiments: HTTP 401, the login of user 'ci' was refused: check "
                      "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"], proc.stderr
    assert "Traceback" not in proc.stderr and wrong not in proc.stderr
    assert log.read_text().count('" 401') == refused_before + 1  # one request, no retry
    after = tree(repo / "models")  # DVC may remove the stage's old outputs; nothing new
    assert all(models_before.get(name) == value for name, value in after.items())


def secrets_of(stack: Stack) -> dict[str, str]:
    """Every password the stack holds: admin, PostgreSQL, the CSRF key, the users'."""
    found = {name: (stack.dir / name).read_text().strip()
             for name in ("admin_password", "pg_password", "flask_secret")}
    found.update({f"users/{p.name}": p.read_text().strip()
                  for p in (stack.dir / "users").iterdir()})
    return found


def test_no_password_in_ps_logs_or_readable_files(tracking_server: Stack, repro: Path) -> None:
    """Acceptance: the admin password (and every other secret of the stack) appears in no
    process's command line, in no log, and only in files no other user can read; the admin
    password is not even in the server's environment (it is read from auth.ini, mode 600)."""
    held = secrets_of(tracking_server)
    assert all(len(value) >= 16 for value in held.values()), "weak generated secret"
    commands = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True,
                              check=True).stdout
    pg_dir = Path((tracking_server.dir / "pg_dir").read_text().strip())
    logs = {p: p.read_text(errors="replace") for p in (
        tracking_server.dir / "mlflow.log", tracking_server.dir / "initdb.log",
        pg_dir / "postgres.log") if p.exists()}
    for name, value in held.items():
        assert value not in commands, f"{name} is on a command line"
        for path, text in logs.items():
            assert value not in text, f"{name} is in {path}"

    admin = held["admin_password"].encode()
    holders = []
    for root in (tracking_server.dir, pg_dir):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and admin in path.read_bytes():
                holders.append(path)
                assert path.stat().st_mode & 0o077 == 0, f"{path} holds the admin password " \
                    f"and is mode {path.stat().st_mode & 0o777:o}"
    assert sorted(p.name for p in holders) == ["admin_password", "auth.ini"]

    pgid = int((tracking_server.dir / "mlflow.pid").read_text())
    for pid in server_pids(pgid):
        environ = (Path("/proc") / str(pid) / "environ").read_bytes()
        assert admin not in environ, f"the admin password is in process {pid}'s environment"


def server_pids(pgid: int) -> list[int]:
    """The live processes of the server's process group (the server, uvicorn, job runner)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile
                pass
    assert pids, f"no process in the server's group {pgid}"
    return pids


def test_server_reports_no_telemetry(tracking_server: Stack) -> None:
    """Acceptance 4, the server's side: the script starts every server process with MLflow's
    telemetry switch off, and the server tells its UI so."""
    pgid = int((tracking_server.dir / "mlflow.pid").read_text())
    for pid in server_pids(pgid):
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        assert b"MLFLOW_DISABLE_TELEMETRY=true" in environ, pid
    status, body = call(tracking_server.uri(), "GET", "/ajax-api/3.0/mlflow/ui-telemetry",
                        tracking_server.login("reader"))
    assert status == 200 and json.loads(body)["disable_ui_telemetry"] is True, body


def test_no_open_server_off_loopback(tmp_path: Path) -> None:
    """Without logins the script listens on loopback only: anything else is refused before
    anything starts. Needs no PostgreSQL: the check comes first."""
    env = {**os.environ, "MLFLOW_HOST": "0.0.0.0", "MLFLOW_AUTH": "off",
           "OWNER_PID": str(os.getpid())}
    try:
        proc = subprocess.run([str(SCRIPT), "start", str(tmp_path / "stack")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "refusing to listen on 0.0.0.0 with MLFLOW_AUTH=off" in proc.stderr
        assert not (tmp_path / "stack").exists()  # nothing was started or even created
    finally:
        if (tmp_path / "stack").is_dir():
            subprocess.run([str(SCRIPT), "stop", str(tmp_path / "stack")], capture_output=True,
                           timeout=60)
