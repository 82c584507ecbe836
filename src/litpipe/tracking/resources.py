"""What a run costs, in MLflow: the machine's use while the model trains (MLflow's system
metrics) and each stage's wall time.

Timings go to MLflow only, never into a DVC-tracked file: those must be the same bytes for
the same params and data, and a wall time never is.

**System metrics** are MLflow's own monitor (the one behind ``mlflow.start_run(
log_system_metrics=True)``: CPU, memory, disk and network, GPU where ``nvidia-ml-py`` is
installed), logged as ``system/...`` on the train run while it trains. litpipe's run is not
MLflow's *fluent* active run (:class:`~litpipe.tracking.run.TrackedRun` uses the client, so
that an outage can queue writes), and the fluent API would also end the run as FINISHED when
the process exits, whatever had happened; so the monitor is started and stopped here, around
the training, and stops when the block ends however it ends. A kill (``kill -9``) takes its
thread with the process; a resumed run continues its steps where they stopped. It never
queues in the outbox: a point that cannot be sent is not worth replaying, and when the server
is away the monitor stops itself (MLflow logs one warning) while training goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from litpipe.tracking.run import TrackedRun

# One sample every 10 s (MLflow's default): a point a minute would hide a short training,
# one a second would add a store write (and a status read) a second for hours. MLflow's
# MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL and ..._SAMPLES_BEFORE_LOGGING still win.
SAMPLING_INTERVAL_S = 10.0
SYSTEM_PREFIX = "system/"  # MLflow's prefix for its system metrics
STAGE_SECONDS = "stage_seconds_"  # + the stage's name: that stage's wall time in seconds
# What a run logs about the machine rather than the model: system metrics, wall times and
# throughput (the train stage's per-epoch timing, training/callbacks.py). Left off the logged
# model, whose page compares models, not the machines that made them.
RESOURCE_METRICS = (SYSTEM_PREFIX, STAGE_SECONDS, "epoch_time_s", "samples_per_s",
                    "cpu_threads")


def is_resource_metric(key: str) -> bool:
    """True for a metric that measures the machine or the time, not the model."""
    return key.startswith(RESOURCE_METRICS)


def log_stage_seconds(run: TrackedRun, stage: str, started: float) -> None:
    """Log ``stage_seconds_<stage>``: the wall time since ``started`` (a
    ``time.perf_counter()`` taken as the stage's work began)."""
    run.log_metrics({f"{STAGE_SECONDS}{stage}": time.perf_counter() - started})


@contextmanager
def system_metrics(run: TrackedRun) -> Iterator[None]:
    """MLflow's system metrics on ``run`` while the block runs, then stopped.

    Not started while ``run``'s outbox holds writes (the server was unreachable a moment
    ago: the monitor would only fail). On leaving, one last sample is logged, so that a
    training shorter than the sampling interval still shows what it used (CPU is averaged
    since the previous sample).
    """
    if run.pending():
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    log = logging.getLogger("mlflow.system_metrics")
    level = log.level
    log.setLevel(logging.WARNING)  # its start and stop are INFO lines on every train stage
    try:
        # resume_logging: a resumed run's points continue after its last step instead of
        # writing a second point at steps already used.
        monitor = SystemMetricsMonitor(run.run_id, sampling_interval=SAMPLING_INTERVAL_S,
                                       resume_logging=True, tracking_uri=run.uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()  # joins the sampling thread and sends what it holds
            if not run.pending():
                try:
                    monitor.collect_metrics()
                    monitor.publish_metrics(monitor.aggregate_metrics())
                    monitor.mlflow_logger.flush()
                except Exception as exc:  # a lost last point must not fail the stage
                    log.warning("litpipe: last system metrics not sent: %s", exc)
    finally:
        log.setLevel(level)
