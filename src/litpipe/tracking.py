"""Every conversation with MLflow: where runs go, and the one run each model gets.

A model's run is created by the train stage (:meth:`TrackedRun.start`) and named in
``models/run.json``; evaluate and export attach to it (:meth:`TrackedRun.attach`) and add
their metrics, pictures and the registered model, so one run holds the whole story. All
calls go through :class:`TrackedRun`, over ``MlflowClient``: one way to talk to MLflow.

The default store is a SQLite DB at the repository root (found via ``$DVC_ROOT`` when DVC
runs the stage, so queued experiments in temporary workspaces land in the same DB), with
artifacts in ``<root>/mlartifacts``. ``MLFLOW_TRACKING_URI`` overrides it, then
``tracking.uri`` in params. ``mlflow`` itself is imported lazily: it costs seconds.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from litpipe import __version__
from litpipe.config import Params, TrackingConfig
from litpipe.errors import LitpipeError
from litpipe.formats import flatten
from litpipe.repo import find_repo_root, git_output

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MAX_PARAM_VALUE = 6000  # MLflow 3's limit on a param value's length
MAX_BATCH = 100  # MLflow's limit on params (and a safe number of metrics) in one log_batch


class TrackingError(LitpipeError):
    """The tracking server cannot be used; the message names the URI."""


def resolve_tracking_uri(cfg: TrackingConfig, root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` > ``tracking.uri`` > ``sqlite:///<repo root>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.uri:
        return cfg.uri
    root = root or find_repo_root()
    return f"sqlite:///{(root / DB_NAME).resolve()}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (before any training) when an HTTP tracking server does not answer."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http only)
            resp.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise TrackingError(f"MLflow tracking server {uri} answered HTTP {exc.code} "
                                f"at {url}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({reason}). Start it, or unset "
            "MLFLOW_TRACKING_URI / tracking.uri to use the local SQLite DB."
        ) from None


def artifact_location(uri: str, root: Path | None = None) -> str | None:
    """Artifact root for new experiments in the embedded store; the server decides otherwise.

    Without this, MLflow would put artifacts under the *current* directory, which under
    ``dvc exp run --queue`` is a temporary workspace that disappears.
    """
    if not uri.startswith("sqlite:"):
        return None
    root = root or find_repo_root()
    return (root / ARTIFACTS_DIR).resolve().as_uri()


def run_tags(stats: dict[str, Any], root: Path | None = None) -> dict[str, str]:
    """Tags that let a run be traced to code and data and filtered in the UI."""
    root = root or find_repo_root()
    cwd = Path.cwd()
    tags = {
        "litpipe.version": __version__,
        "dataset": str(stats.get("dataset")),
        "dataset.hash": str(stats.get("data_hash")),
    }
    for split, h in stats.get("hashes", {}).items():
        tags[f"dataset.hash.{split}"] = h
    commit = git_output(cwd, "rev-parse", "HEAD") or git_output(root, "rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.commit"] = commit
        status = git_output(cwd, "status", "--porcelain", "--untracked-files=no")
        tags["git.dirty"] = str(bool(status)).lower()
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        tags["dvc.exp_name"] = exp_name
    return tags


class TrackedRun:
    """One model's MLflow run; every stage logs to it through these methods."""

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.run_id = run_id
        self.client = MlflowClient(tracking_uri=uri)

    @classmethod
    def start(cls, uri: str, experiment: str, name: str, tags: dict[str, str]) -> TrackedRun:
        """Create a new run in ``experiment`` (created, with a durable artifact root, if new)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            try:
                exp_id = client.create_experiment(experiment,
                                                  artifact_location=artifact_location(uri))
            except Exception:  # created concurrently by a parallel queued experiment
                exp = client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        run = client.create_run(exp_id, run_name=name, tags=tags)
        return cls(uri, run.info.run_id)

    @classmethod
    def attach(cls, run_json: Path) -> TrackedRun:
        """The run that trained the model described by ``models/run.json``."""
        run = json.loads(run_json.read_text())
        return cls(run["tracking_uri"], run["run_id"])

    def log_params(self, params: Params) -> None:
        """The whole params.yaml, flattened (``optimizer.lr``), in batches within MLflow's limits.

        Lightning's ``MLFlowLogger.log_hyperparams`` cuts values at 250 characters (an old
        MLflow limit), which mangles lists such as the mirror URLs; MLflow 3 accepts 6000.
        """
        self.log_values({k: str(v) for k, v in flatten(params.model_dump(mode="json")).items()})

    def log_values(self, values: dict[str, str]) -> None:
        """String params (``tuned.lr``, ...), batched."""
        from mlflow.entities import Param

        items = [Param(k, v[:MAX_PARAM_VALUE]) for k, v in sorted(values.items())]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, params=items[i: i + MAX_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Several metrics at one ``step`` (the epoch, for curves) in one request each 100."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i: i + MAX_BATCH])

    def log_artifact(self, path: Path, folder: str) -> None:
        """Upload ``path`` into the run's artifact folder ``folder``."""
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def log_dataset(self, stats: dict[str, Any], source: str) -> None:
        """Record the processed dataset as an MLflow dataset input (name, digest, source).

        The digest is the split stage's content hash, so two runs on the same data show the
        same dataset in the UI, and a changed split shows up as a different one.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        schema = {"images": {"dtype": "uint8", "shape": [-1, *stats["shape"]]},
                  "labels": {"dtype": "int64", "classes": stats["classes"]}}
        profile = {"counts": stats["counts"], "class_counts": stats["class_counts"]}
        dataset = Dataset(name=str(stats["dataset"]), digest=str(stats["data_hash"])[:36],
                          source_type="local", source=json.dumps({"uri": source}),
                          schema=json.dumps(schema), profile=json.dumps(profile))
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(self.run_id, status=status)

    def log_onnx_model(self, onnx_path: Path, example: Any, example_out: Any,
                       registered_model: str) -> str | None:
        """Log an ONNX model with signature and input example; register a new version.

        MLflow 3 links a logged model to a run only through its "active run", so this is
        the one place that uses the fluent API, resuming this run for the call.
        """
        import mlflow
        import onnx
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(self.uri)
        signature = infer_signature(example, example_out)
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.onnx.log_model(
                onnx.load(str(onnx_path)), name="model", signature=signature,
                input_example=example, registered_model_name=registered_model,
                onnx_execution_providers=["CPUExecutionProvider"],
            )
        version = getattr(info, "registered_model_version", None)
        return str(version) if version is not None else None
