"""The served model: log the exported ONNX model into the model's run as an MLflow pyfunc
model, link the run's final numbers and dataset to it, and register it as a new version with
the alias ``candidate``.

**Its metrics.** MLflow 3 shows a logged model's own metrics (on its page, and on each
registered version's), and ``log_model`` links them itself: the run's metrics *at one step*,
0 unless told otherwise. litpipe logs its curves with ``step = epoch``, so that was epoch 0's
values (and nothing says which dataset they were measured on: "Datasets used" lists the
datasets named by the model's metrics). No single step holds the final numbers (the test
metrics are at step 0, the last epoch's curves at its own, MLflow's system metrics at theirs),
so the model is created first (``mlflow.initialize_logged_model``), its files logged into it
outside an active run (where ``log_model`` links nothing), and :func:`link_final_metrics`
links what the run's page shows: each metric's latest value, with the run's dataset, leaving
out what measures the machine rather than the model (:mod:`.resources`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from litpipe.tracking.client import env_restored, is_outage, refusal_status, tracking_error
from litpipe.tracking.models import (
    CANDIDATE,
    ONNX_SHA256_TAG,
    Version,
    file_sha256,
    set_alias,
    versions_of_run,
)
from litpipe.tracking.resources import is_resource_metric
from litpipe.tracking.run import MAX_BATCH, TrackedRun

DATASET_CONTEXT = "mlflow.data.context"  # the input tag saying what a run used a dataset for


class _Context:
    """What MLflow hands a pyfunc model's ``load_context``: its artifacts' local paths."""

    def __init__(self, artifacts: dict[str, str]) -> None:
        self.artifacts = artifacts


def _package_copy(dest: Path) -> Path:
    """A copy of the litpipe package in ``dest/litpipe`` (sources only, no ``__pycache__``),
    for the served model's ``code_paths``: MLflow puts its parent first on ``sys.path``
    when it loads the model, so the model runs the litpipe code it was exported with."""
    import shutil

    import litpipe

    src = Path(litpipe.__file__).parent
    return Path(shutil.copytree(src, dest / "litpipe",
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc")))


@contextmanager
def _fluent_uris(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``uri`` for the block, then
    put back what was there before.

    MLflow keeps both in module globals and copies them into the ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` environment variables. Left set, they would silently redirect every
    later client in the same process (an export run from a notebook or a test session) to
    this run's store, whatever URI that client was given for tracking.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    with env_restored("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved_tracking)
            registry_utils._registry_uri = saved_registry  # set_registry_uri(None) keeps env


def _run_dataset(run_info: Any) -> tuple[str | None, str | None]:
    """(name, digest) of the dataset the run trained on (its "training" input, else its
    first), or (None, None) when it logged none."""
    inputs = list(run_info.inputs.dataset_inputs) if run_info.inputs else []
    training = [d for d in inputs
                if any(t.key == DATASET_CONTEXT and t.value == "training" for t in d.tags)]
    chosen = training or inputs
    return (chosen[0].dataset.name, chosen[0].dataset.digest) if chosen else (None, None)


def link_final_metrics(run: TrackedRun, model_id: str) -> int:
    """Link the run's final numbers to logged model ``model_id``; return the step of the
    last epoch (the highest step linked).

    Each metric's latest value (the highest step; the one the run's page shows), with its
    own step and time, named with the run's dataset; system metrics, wall times and
    throughput are left out. Idempotent: a value the model already holds at that step is not
    sent again (a rerun of the export logs its parity again, the same values at a later
    time), so a rerun only adds what is new, such as a metric logged since.
    """
    from mlflow.entities import Metric

    client = run.client
    info = client.get_run(run.run_id)
    dataset, digest = _run_dataset(info)
    held = {(m.key, m.step, m.value) for m in client.get_logged_model(model_id).metrics or []}
    linked: list[Metric] = []
    for key in sorted(k for k in info.data.metrics if not is_resource_metric(k)):
        history = client.get_metric_history(run.run_id, key)
        if not history:
            continue
        last = max(history, key=lambda m: (m.step, m.timestamp))
        linked.append(Metric(key, last.value, last.timestamp, last.step, model_id=model_id,
                             dataset_name=dataset, dataset_digest=digest,
                             run_id=run.run_id))
    new = [m for m in linked if (m.key, m.step, m.value) not in held]
    for i in range(0, len(new), MAX_BATCH):  # the run already holds these points: MLflow
        client.log_batch(run.run_id, metrics=new[i: i + MAX_BATCH])  # adds only the links
    return max((m.step for m in linked), default=0)


def log_served_model(run: TrackedRun, export_dir: Path, example: Any,
                     metadata: dict[str, Any], registered_model: str, name: str,
                     model_type: str | None = None) -> str | None:
    """Log the servable pyfunc model into ``run`` as logged model ``name``, link the run's
    final metrics and dataset to it, register it as a new version of ``registered_model``
    with the alias ``candidate``; return the version number.

    The model is :mod:`litpipe.tracking.pyfunc` (a models-from-code file; no pickle),
    with ``export_dir``'s ``model.onnx`` and ``model.json`` as artifacts and the litpipe
    package as its code. ``example`` (float32 N×C×H×W in [0, 1]) gives the tensor
    signature and the input example; ``metadata`` (the input contract, classes) goes into
    the MLmodel file. The version is created with the SHA-256 of its ``model.onnx`` as a tag
    (in the same request): that is how a promotion finds the version holding the work
    tree's export, and how a rerun (after a kill, or a change of a param that leaves the
    ONNX bytes as they were) finds the version it already registered: a version is
    registered once per (run, ONNX digest), and ``candidate`` moved to it. The logged model
    carries the run's params (as ``log_model`` would copy them) and is the run's output at
    the last epoch's step.
    """
    import tempfile

    import mlflow
    import numpy as np
    import onnxruntime
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import infer_signature

    from litpipe.tracking import pyfunc

    onnx_path, meta_path = export_dir / "model.onnx", export_dir / "model.json"
    digest = file_sha256(onnx_path)
    for version, sha in versions_of_run(registered_model, run.run_id, run.uri):
        if sha == digest:
            if version.model_id is not None:
                try:
                    link_final_metrics(run, version.model_id)
                except Exception as exc:
                    if is_outage(exc) or refusal_status(exc):
                        raise tracking_error(run.uri, "could not link the model's metrics",
                                             exc) from None
                    raise
            set_alias(version, CANDIDATE, run.uri)
            return version.version
    artifacts = {pyfunc.ONNX_ARTIFACT: str(onnx_path), pyfunc.META_ARTIFACT: str(meta_path)}
    model = pyfunc.ImageClassifier()
    model.load_context(_Context(artifacts))
    signature = infer_signature(example, model.predict(None, example))
    # Exactly what the model imports, pinned to this environment: MLflow would otherwise
    # infer the list by loading the model in a subprocess (seconds, on every export).
    requirements = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}",
                    f"onnxruntime=={onnxruntime.__version__}"]
    try:
        source = run.client.get_run(run.run_id)
        with _fluent_uris(run.uri), \
                tempfile.TemporaryDirectory(prefix="litpipe-code-") as tmp:
            logged = mlflow.initialize_logged_model(
                name=name, source_run_id=run.run_id, params=dict(source.data.params),
                model_type=model_type, experiment_id=source.info.experiment_id)
            info = mlflow.pyfunc.log_model(
                name=name, model_id=logged.model_id, python_model=Path(pyfunc.__file__),
                artifacts=artifacts, code_paths=[str(_package_copy(Path(tmp)))],
                signature=signature, input_example=example, metadata=metadata,
                pip_requirements=requirements,
            )
            step = link_final_metrics(run, logged.model_id)
            run.client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step)])
            registered = mlflow.register_model(info.model_uri, registered_model,
                                               tags={ONNX_SHA256_TAG: digest})
    except Exception as exc:
        if is_outage(exc) or refusal_status(exc):
            raise tracking_error(run.uri, "could not store the model", exc) from None
        raise
    version = Version(registered_model, str(registered.version), run.run_id,
                      logged.model_id)
    set_alias(version, CANDIDATE, run.uri)
    return version.version
