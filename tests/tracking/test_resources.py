"""litpipe/tracking/resources.py: MLflow's system metrics on a run only while the block runs,
continuing a resumed run's steps, never through MLflow's fluent run (which would end the run
FINISHED when the process exits), and not started while the outbox waits for the server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from litpipe.tracking.resources import is_resource_metric, system_metrics
from litpipe.tracking.run import TrackedRun
from tests.helpers.registry import new_run, sqlite_uri

CPU = "system/cpu_utilization_percentage"


def _monitors() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor" and t.is_alive()]


def _steps(run: TrackedRun, key: str) -> list[int]:
    return sorted(m.step for m in run.client.get_metric_history(run.run_id, key))


@pytest.fixture()
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrackedRun:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return TrackedRun(sqlite_uri(tmp_path), new_run(tmp_path), outbox=tmp_path / "outbox")


def test_cpu_and_memory_on_the_run_and_the_monitor_stopped_after(run: TrackedRun) -> None:
    """A block shorter than the sampling interval still leaves a point; MLflow's fluent
    active run is never opened, so nothing ends this run behind litpipe's back."""
    import mlflow

    assert not _monitors()
    with system_metrics(run):
        assert len(_monitors()) == 1
        assert mlflow.active_run() is None
    assert not _monitors()
    assert mlflow.active_run() is None
    logged = run.logged_metrics()
    assert {CPU, "system/system_memory_usage_megabytes"} <= set(logged)
    assert _steps(run, CPU) == [0]
    assert run.status() == "RUNNING"  # the train stage, not the monitor, ends the run


def test_a_stopped_stage_stops_the_monitor(run: TrackedRun) -> None:
    """Ctrl-C or SIGTERM (a KeyboardInterrupt in the stage) ends the monitor with the block."""
    with pytest.raises(KeyboardInterrupt), system_metrics(run):
        assert _monitors()
        raise KeyboardInterrupt
    assert not _monitors()


def test_a_resumed_run_continues_its_steps(run: TrackedRun) -> None:
    """After a kill and a resume, the points go on from the last step, none written twice."""
    with system_metrics(run):
        pass
    with system_metrics(TrackedRun(run.uri, run.run_id, outbox=run.outbox)):
        pass
    assert _steps(run, CPU) == [0, 1]


def test_not_started_while_the_outbox_waits(run: TrackedRun) -> None:
    """Writes queued for an unreachable server: the monitor would only fail, so none runs
    and nothing is sent behind the queue's back."""
    assert run.outbox is not None
    run.outbox.write_text('{"op": "status", "status": "RUNNING"}\n')
    with system_metrics(run):
        assert not _monitors()
    assert not any(k.startswith("system/") for k in run.logged_metrics())


@pytest.mark.parametrize(("key", "machine"), [
    (CPU, True), ("stage_seconds_train", True), ("epoch_time_s", True),
    ("samples_per_s", True), ("cpu_threads", True), ("val_acc", False),
    ("test_acc.cat", False), ("train_tflop", False), ("onnx_max_abs_diff", False)])
def test_what_measures_the_machine_rather_than_the_model(key: str, machine: bool) -> None:
    assert is_resource_metric(key) is machine
