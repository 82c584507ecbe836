"""Where MLflow runs go, and the tags that make them comparable.

The default store is a SQLite DB at the repository root (found via ``$DVC_ROOT`` when DVC
runs the stage, so queued experiments in temporary workspaces land in the same DB), with
artifacts in ``<root>/mlartifacts``. ``MLFLOW_TRACKING_URI`` overrides it, then
``tracking.uri`` in params. ``mlflow`` itself is imported lazily: it costs seconds.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from litpipe import __version__
from litpipe.config import TrackingConfig, find_repo_root

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


class TrackingError(RuntimeError):
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


def ensure_experiment(uri: str, name: str) -> str:
    """Return the id of experiment ``name``, creating it with a durable artifact root."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    except Exception:  # created concurrently by a parallel queued experiment
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


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
    commit = _git(cwd, "rev-parse", "HEAD") or _git(root, "rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.commit"] = commit
        status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
        tags["git.dirty"] = str(bool(status)).lower()
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        tags["dvc.exp_name"] = exp_name
    return tags


MAX_PARAM_VALUE = 6000  # MLflow 3's limit on a param value's length
MAX_BATCH_PARAMS = 100  # MLflow's limit on params in one log_batch call


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Log flattened params in batches, within MLflow's limits.

    Lightning's ``MLFlowLogger.log_hyperparams`` cuts values at 250 characters (an old MLflow
    limit), which mangles lists such as the mirror URLs; MLflow 3 accepts 6000.
    """
    from mlflow.entities import Param

    items = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in sorted(params.items())]
    for i in range(0, len(items), MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=items[i: i + MAX_BATCH_PARAMS])


def log_dataset_input(client: Any, run_id: str, stats: dict[str, Any], source: str) -> None:
    """Record the processed dataset as an MLflow dataset input (name, digest, source).

    The digest is the split stage's content hash, so two runs on the same data show the
    same dataset in the UI, and a changed split shows up as a different one.
    """
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    schema = {"images": {"dtype": "uint8", "shape": [-1, *stats["shape"]]},
              "labels": {"dtype": "int64", "classes": stats["classes"]}}
    profile = {"counts": stats["counts"], "class_counts": stats["class_counts"]}
    dataset = Dataset(name=str(stats["dataset"]), digest=str(stats["data_hash"])[:36],
                      source_type="local", source=json.dumps({"uri": source}),
                      schema=json.dumps(schema), profile=json.dumps(profile))
    client.log_inputs(run_id, datasets=[
        DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])


def client(uri: str):  # noqa: ANN201 (mlflow type imported lazily)
    """An ``MlflowClient`` for ``uri``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)
