"""The served model: log the exported ONNX model into the model's run as an MLflow pyfunc
model and register it as a new version with the alias ``candidate``."""

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
from litpipe.tracking.run import TrackedRun


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


def log_served_model(run: TrackedRun, export_dir: Path, example: Any,
                     metadata: dict[str, Any], registered_model: str) -> str | None:
    """Log the servable pyfunc model into ``run``, register it as a new version of
    ``registered_model`` with the alias ``candidate``; return the version number.

    The model is :mod:`litpipe.tracking.pyfunc` (a models-from-code file; no pickle),
    with ``export_dir``'s ``model.onnx`` and ``model.json`` as artifacts and the litpipe
    package as its code. ``example`` (float32 N×C×H×W in [0, 1]) gives the tensor
    signature and the input example; ``metadata`` (the input contract, classes) goes into
    the MLmodel file. The version is created with the SHA-256 of its ``model.onnx`` as a tag
    (in the same request): that is how a promotion finds the version holding the work
    tree's export, and how a rerun (after a kill, or a change of a param that leaves the
    ONNX bytes as they were) finds the version it already registered: a version is
    registered once per (run, ONNX digest), and ``candidate`` moved to it.

    MLflow 3 links a logged model to a run only through its "active run", so this uses the
    fluent API, resuming ``run`` for the call.
    """
    import tempfile

    import mlflow
    import numpy as np
    import onnxruntime
    from mlflow.models import infer_signature

    from litpipe.tracking import pyfunc

    onnx_path, meta_path = export_dir / "model.onnx", export_dir / "model.json"
    digest = file_sha256(onnx_path)
    for version, sha in versions_of_run(registered_model, run.run_id, run.uri):
        if sha == digest:
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
        with _fluent_uris(run.uri), \
                tempfile.TemporaryDirectory(prefix="litpipe-code-") as tmp, \
                mlflow.start_run(run_id=run.run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=Path(pyfunc.__file__), artifacts=artifacts,
                code_paths=[str(_package_copy(Path(tmp)))], signature=signature,
                input_example=example, metadata=metadata, pip_requirements=requirements,
            )
            registered = mlflow.register_model(info.model_uri, registered_model,
                                               tags={ONNX_SHA256_TAG: digest})
    except Exception as exc:
        if is_outage(exc) or refusal_status(exc):
            raise tracking_error(run.uri, "could not store the model", exc) from None
        raise
    version = Version(registered_model, str(registered.version), run.run_id)
    set_alias(version, CANDIDATE, run.uri)
    return version.version
