"""The pipeline against a real tracking server: `mlflow server` on PostgreSQL (Debian's).

scripts/mlflow_server.sh starts the stack on loopback in a temporary directory; the fixture
stops it. Skipped, with the reason, where PostgreSQL or psycopg2 is not installed.
"""

from __future__ import annotations

import glob
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, pipeline_env

pytestmark = pytest.mark.e2e


def _missing() -> str | None:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL server binaries not installed (apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 not installed (pip install -e '.[server]')"
    return None


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("mlflow-server")
    base.chmod(0o755)  # the postgres user must reach its data directory
    script = str(ROOT / "scripts/mlflow_server.sh")
    proc = subprocess.run([script, "start", str(base / "stack")], capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    uri = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
    try:
        yield uri
    finally:
        subprocess.run([script, "stop", str(base / "stack")], capture_output=True, timeout=120)


def test_pipeline_against_postgres_backed_server(tracking_server: str, repo_copy: Path
                                                 ) -> None:
    repo = repo_copy
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["data"].update({"dataset": "digits", "val_size": 200})
    raw["train"].update({"epochs": 2, "batch_size": 64, "progress_bar": False,
                         "val_image_samples": 4})
    raw["export"]["parity_batch"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    env = pipeline_env()
    env["MLFLOW_TRACKING_URI"] = tracking_server

    def dvc(*args: str) -> str:
        proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    dvc("repro")
    subprocess.run(["git", "commit", "-qam", "baseline"], cwd=repo, env=env, check=True)
    # Two queued experiments: their workers inherit MLFLOW_TRACKING_URI from `queue start`.
    for lr in ("0.001", "0.004"):
        dvc("exp", "run", "--queue", "-S", f"train.lr={lr}")
    dvc("queue", "start")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        status = dvc("queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status and "Success" in status, status
    assert not (repo / "mlflow.db").exists()  # nothing went to the embedded default

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_server)
    exp = client.get_experiment_by_name("litpipe")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.params["train.lr"] for r in runs) == ["0.001", "0.002", "0.004"]
    for r in runs:  # every run complete: curves, test metrics, a registered model version
        assert {"val_acc", "test_acc", "onnx_max_abs_diff"} <= set(r.data.metrics)
        assert r.info.status == "FINISHED"
    versions = client.search_model_versions("name='litpipe-classifier'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)
    run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
    [run_] = [r for r in runs if r.info.run_id == run_id]
    assert run_.data.params["data.dataset"] == "digits"
    assert [m.step for m in client.get_metric_history(run_.info.run_id, "val_acc")] == [0, 1]
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert run_.data.metrics["test_acc"] == pytest.approx(metrics["test_acc"], abs=1e-6)
    # Artifacts go through the server (--serve-artifacts) and come back intact.
    local = client.download_artifacts(run_.info.run_id, "evaluate/metrics.json",
                                      str(repo / "downloaded"))
    assert json.loads(Path(local).read_text()) == metrics
