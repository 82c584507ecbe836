"""MLflow artifacts in an S3 bucket, proxied by the tracking server: clients need no S3 keys.

A team's tracking server keeps metadata in a database and artifacts in object storage. Here
`scripts/mlflow_server.sh` runs with `MLFLOW_ARTIFACTS_S3=s3://…` and `MLFLOW_S3_ENDPOINT_URL`
pointing at moto's S3 server on 127.0.0.1 (tests/helpers/s3.py): PostgreSQL for metadata, the
bucket for artifacts, and `--serve-artifacts` so that every artifact goes through the server.
Only the server holds S3 credentials. A tiny `dvc repro` runs in an environment without any,
and its checkpoint, pictures and ONNX model must land in the bucket (listed with boto3);
`mlflow artifacts download` of a run artifact and of `models:/litpipe-classifier/1`, each in a
fresh process that has no S3 credentials either, must get the same bytes back through the
server.

Needs PostgreSQL's server binaries and psycopg2 (skipped, saying which, where they are missing;
`./setup.sh --dev` installs both, and fails in CI when it cannot).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers.repo import ROOT, configure_tiny_digits, make_repo_copy, pipeline_env
from tests.helpers.s3 import MotoS3, with_aws, without_aws

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "scripts/mlflow_server.sh"
BUCKET = "litpipe-mlflow"
PREFIX = "artifacts"
MLFLOW = str(Path(sys.executable).parent / "mlflow")


def stack_unavailable() -> str | None:
    """Why the PostgreSQL-backed stack cannot start here, or None."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL server binaries missing (apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 missing (it is in requirements.lock: ./setup.sh --dev)"
    return None


@dataclass
class S3Stack:
    """The tracking stack with its artifacts in the moto bucket."""

    s3: MotoS3
    dir: Path
    uri: str

    def client_env(self) -> dict[str, str]:
        """A client's environment: the tracking URI and no S3 credentials or endpoint."""
        return {**without_aws(pipeline_env()), "MLFLOW_TRACKING_URI": self.uri}


def server_env(s3: MotoS3) -> dict[str, str]:
    """The server's environment: S3 keys, the endpoint, the bucket, and our pid (watchdog);
    without logins (loopback only): this file is about S3, logins are
    tests/e2e/test_tracking_server.py's."""
    return {**with_aws(dict(os.environ)), "MLFLOW_ARTIFACTS_S3": f"s3://{BUCKET}/{PREFIX}",
            "MLFLOW_S3_ENDPOINT_URL": s3.endpoint, "OWNER_PID": str(os.getpid()),
            "MLFLOW_AUTH": "off"}


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Stack]:
    reason = stack_unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("s3-stack")
    s3 = MotoS3(root)
    stack_dir = root / "stack"
    try:
        s3.create_bucket(BUCKET)
        proc = subprocess.run([str(SCRIPT), "start", str(stack_dir)], env=server_env(s3),
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"mlflow_server.sh start failed:\n{proc.stdout}{proc.stderr}"
        uri = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
        yield S3Stack(s3, stack_dir, uri)
    finally:
        subprocess.run([str(SCRIPT), "stop", str(stack_dir)], capture_output=True, timeout=60)
        s3.stop()


@pytest.fixture(scope="module")
def repro(s3_stack: S3Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `dvc repro` whose every MLflow call goes to the server, without S3 keys."""
    repo = make_repo_copy(tmp_path_factory.mktemp("s3-repro") / "repo")
    configure_tiny_digits(repo)
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=s3_stack.client_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return repo


def fetch(stack: S3Stack, dest: Path, *args: str) -> None:
    """`mlflow artifacts download *args --dst-path dest` in a fresh process, no S3 keys."""
    proc = subprocess.run([MLFLOW, "artifacts", "download", *args, "--dst-path", str(dest)],
                          env=stack.client_env(), cwd=dest.parent, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_artifacts_land_in_the_bucket_and_come_back_through_the_server(
        s3_stack: S3Stack, repro: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    run_id = yaml.safe_load((repro / "models/run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=s3_stack.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # Proxied: the run's artifact URI names the server, not the bucket.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert (s3_stack.dir / "artifacts_destination").read_text().strip() == \
        f"s3://{BUCKET}/{PREFIX}"
    assert not (s3_stack.dir / "artifacts").exists()  # nothing went to a local directory

    # In the bucket, under the destination: the run's checkpoint, pictures and ONNX model,
    # and the logged model that `models:/` resolves to.
    keys = s3_stack.s3.keys(BUCKET, PREFIX + "/")
    run_prefix = f"{PREFIX}/{run.info.experiment_id}/{run_id}/artifacts/"
    in_run = {k.removeprefix(run_prefix) for k in keys if k.startswith(run_prefix)}
    assert {"checkpoint/best.ckpt", "evaluate/samples.png", "evaluate/confusion.png",
            "evaluate/curves.png", "export/model.onnx", "config/params.yaml",
            "val_predictions/epoch_000.png"} <= in_run, sorted(keys)
    # The registered model is an MLflow "logged model", stored beside the runs (its files
    # under .../models/<model id>/artifacts/, the ONNX file among them, wrapped or not).
    models_prefix = f"{PREFIX}/{run.info.experiment_id}/models/"
    logged_onnx = [k for k in keys if k.startswith(models_prefix) and k.endswith("model.onnx")]
    assert len(logged_onnx) == 1, sorted(keys)

    def s3_bytes(key: str) -> bytes:
        return s3_stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()

    assert s3_bytes(run_prefix + "evaluate/samples.png") == \
        (repro / "reports/samples.png").read_bytes()
    assert s3_bytes(run_prefix + "checkpoint/best.ckpt") == \
        (repro / "models/best.ckpt").read_bytes()

    # Back through the server, in processes without S3 credentials: a run artifact ...
    fetch(s3_stack, tmp_path / "run", "--run-id", run_id, "--artifact-path",
          "evaluate/samples.png")
    assert (tmp_path / "run/samples.png").read_bytes() == \
        (repro / "reports/samples.png").read_bytes()
    # ... and the registered model, by name and version.
    [version] = client.search_model_versions("name='litpipe-classifier'")
    assert version.run_id == run_id
    fetch(s3_stack, tmp_path / "model", "--artifact-uri",
          f"models:/litpipe-classifier/{version.version}")
    mlmodel = yaml.safe_load((tmp_path / "model/MLmodel").read_text())
    assert client.get_logged_model(mlmodel["model_id"]).source_run_id == run_id
    assert mlmodel["signature"]["inputs"]
    [onnx] = (tmp_path / "model").rglob("model.onnx")
    assert onnx.read_bytes() == s3_bytes(logged_onnx[0])
    assert logged_onnx[0].endswith(onnx.relative_to(tmp_path / "model").as_posix())


def test_stack_keeps_its_artifact_destination(tmp_path: Path) -> None:
    """A stack restarted with another MLFLOW_ARTIFACTS_S3 (or none) is refused before anything
    starts: its existing runs' artifacts live at the first destination. A malformed value is
    refused too. Needs no PostgreSQL: both checks come first."""
    stack_dir, other = tmp_path / "stack", tmp_path / "other"
    stack_dir.mkdir()
    (stack_dir / "artifacts_destination").write_text("s3://old-bucket/mlflow\n")
    # OWNER_PID and the stops below: should a check break and a stack start, it is stopped.
    env = {**without_aws(dict(os.environ)), "MLFLOW_ARTIFACTS_S3": "s3://new-bucket/mlflow",
           "OWNER_PID": str(os.getpid())}
    try:
        proc = subprocess.run([str(SCRIPT), "start", str(stack_dir)], env=env,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "keeps its artifacts in s3://old-bucket/mlflow, not s3://new-bucket/mlflow" in \
            proc.stderr
        assert not (stack_dir / "mlflow.pid").exists()

        env["MLFLOW_ARTIFACTS_S3"] = "bucket-without-scheme"
        proc = subprocess.run([str(SCRIPT), "start", str(other)], env=env,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 2 and "must be s3://bucket[/path]" in proc.stderr, \
            proc.stdout + proc.stderr
    finally:
        for d in (stack_dir, other):
            if d.is_dir():
                subprocess.run([str(SCRIPT), "stop", str(d)], capture_output=True, timeout=60)
