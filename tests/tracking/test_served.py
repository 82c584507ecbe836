"""litpipe/tracking/served.py: the served model is registered once per (run, ONNX bytes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.models import train_checkpoint
from tests.helpers.registry import MODEL_NAME, export_registered, new_run, sqlite_uri


def _versions(base: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri(base), registry_uri=sqlite_uri(base))
    return sorted(str(mv.version) for mv in client.search_model_versions(f"name='{MODEL_NAME}'"))


def test_a_rerun_finds_its_version_instead_of_registering_another(tmp_path: Path) -> None:
    """Issue 20, case 6: a kill after "Created version N" and a rerun, or a change of an
    export param that leaves the ONNX bytes as they were, registered version N+1 from the
    same run with the same bytes."""
    params = train_checkpoint(tmp_path)
    new_run(tmp_path)
    assert export_registered(tmp_path, params) == "1"
    assert export_registered(tmp_path, params) == "1"  # the rerun after a kill
    other = params.model_copy(update={"export": params.export.model_copy(
        update={"parity_batch": params.export.parity_batch + 1})})
    assert export_registered(tmp_path, other) == "1"  # same ONNX bytes
    assert _versions(tmp_path) == ["1"]


def test_a_new_run_registers_a_new_version(tmp_path: Path) -> None:
    params = train_checkpoint(tmp_path)
    new_run(tmp_path, "first")
    assert export_registered(tmp_path, params) == "1"
    new_run(tmp_path, "second")
    assert export_registered(tmp_path, params) == "2"


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
