"""Where MLflow runs go, checked before any work depends on it.

The default store is a SQLite DB at the repository root (found via ``$DVC_ROOT`` when DVC
runs the stage, so queued experiments in temporary workspaces land in the same DB), with
artifacts in ``<root>/mlartifacts``. ``MLFLOW_TRACKING_URI`` overrides it, then
``tracking.uri`` in params.

Three things MLflow does not do for us, and why they are here:

* **Bounded waits** (:mod:`litpipe.tracking.client`, imported here): MLflow's HTTP client
  retries for minutes by default; a stage that hangs that long on a dead server looks frozen.
* **Checks that fail fast, naming the URI or file.** A server whose ``/health`` answers but
  whose API hangs, or a SQLite path that cannot be written, would otherwise surface minutes
  later as a traceback; :func:`check_store` finds out in a few seconds, before training.
* **Creating the SQLite schema once.** MLflow creates and migrates its schema on first use,
  and two processes doing that at once (parallel queued experiments on a fresh clone) break
  each other. :func:`check_store` does it under a file lock first.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from litpipe.locks import locked
from litpipe.repo import find_repo_root
from litpipe.schema import TrackingConfig
from litpipe.tracking.client import TrackingError

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
CHECK_TIMEOUT_S = 5.0
def resolve_tracking_uri(cfg: TrackingConfig, root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` > ``tracking.uri`` > ``sqlite:///<repo root>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.uri:
        return cfg.uri
    root = root or find_repo_root()
    return f"sqlite:///{(root / DB_NAME).resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores."""
    if not uri.startswith("sqlite:"):
        return None
    return Path(unquote(urlparse(uri).path))


def artifact_location(uri: str, root: Path | None = None) -> str | None:
    """Artifact root for new experiments in the embedded store; the server decides otherwise.

    Without this, MLflow would put artifacts under the *current* directory, which under
    ``dvc exp run --queue`` is a temporary workspace that disappears.
    """
    if sqlite_path(uri) is None:
        return None
    root = root or find_repo_root()
    return (root / ARTIFACTS_DIR).resolve().as_uri()


_CHECKED: set[str] = set()  # the stores this process found usable


def check_store(uri: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Fail in seconds, with one line naming the URI or file, when ``uri`` cannot be used.

    HTTP: ``/health`` must answer and so must the API (a half-alive server passes the
    first and hangs on the second). SQLite: the file must be writable, and its schema is
    created or migrated here, once, under a lock.

    A store that passed is not checked again by the same process: the train stage's entry
    checks before torch loads, and the training code it then calls finds it checked.
    """
    if uri in _CHECKED:
        return
    db = sqlite_path(uri)
    if db is not None:
        _prepare_sqlite(uri, db)
    elif urlparse(uri).scheme in ("http", "https"):
        base = uri.rstrip("/")
        _probe(uri, f"{base}/health", "is unreachable", timeout)
        _probe(uri, f"{base}/api/2.0/mlflow/experiments/search?max_results=1",
               "answers /health but its API does not respond", timeout)
    _CHECKED.add(uri)


def check_tracking(cfg: TrackingConfig) -> None:
    """:func:`check_store` for the tracking store params name, in the process that will
    talk to it: rank 0 of a distributed run (its rank is read from the environment the
    launcher sets, as Lightning does, so this runs before torch is imported)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "0") != "0":
            return
    check_store(resolve_tracking_uri(cfg))


def _probe(uri: str, url: str, what: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            resp.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise TrackingError(f"MLflow tracking server {uri} answered HTTP {exc.code} at "
                                f"{url}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {uri} {what} ({reason}; waited at most {timeout:g} s). "
            "Start or fix it, or unset MLFLOW_TRACKING_URI / "
            "tracking.uri to use the local SQLite DB.") from None


def _prepare_sqlite(uri: str, db: Path) -> None:
    """Check ``db`` is a writable SQLite file; create/migrate MLflow's schema once, locked."""
    if not db.parent.is_dir():
        raise TrackingError(f"MLflow database {db}: its directory {db.parent} does not exist")
    try:
        with locked(db.with_name(db.name + ".lock")):
            conn = sqlite3.connect(db, timeout=CHECK_TIMEOUT_S)
            try:
                conn.execute("BEGIN IMMEDIATE")  # takes the write lock: proves writability
                conn.rollback()
            finally:
                conn.close()
            from mlflow.tracking import MlflowClient

            # The first client on a store creates or upgrades its tables: do it here, alone.
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except (OSError, sqlite3.Error) as exc:
        raise TrackingError(f"MLflow database {db} cannot be used: {exc}") from None
    except Exception as exc:  # MLflow/SQLAlchemy wrap sqlite errors in their own types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow database {db} cannot be used: {first}. If the file is "
                            "damaged, move it aside; a new one is created on the next run.") \
            from None


def reading_uri(root: Path | None = None) -> str:
    """The store ``litpipe predict --model`` reads: the one the pipeline writes to.

    ``$MLFLOW_TRACKING_URI``, else ``tracking.uri`` of ``params.yaml`` at the repository
    root, else the SQLite DB there. params.yaml is read as plain YAML, not validated: a
    typo in a training knob must not stop anyone from using a registered model.
    """
    import yaml

    root = root or find_repo_root()
    uri = None
    try:
        raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
        if isinstance(raw, dict) and isinstance(raw.get("tracking"), dict):
            uri = raw["tracking"].get("uri")
    except (OSError, yaml.YAMLError):
        pass
    cfg = TrackingConfig.model_construct(uri=uri if isinstance(uri, str) else None,
                                         experiment="")
    return resolve_tracking_uri(cfg, root)


def check_existing_store(uri: str) -> None:
    """:func:`check_store`, but a SQLite file that does not exist is an error, not created:
    a registry read (or a promotion) in an empty new database can only fail later, less
    clearly."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        shown = "/" + str(db).lstrip("/") if db.is_absolute() else db  # no "//" from the URI
        raise TrackingError(
            f"MLflow database {shown} does not exist, so no model is registered there; run "
            "`dvc repro` first, or set MLFLOW_TRACKING_URI to the store that holds the model")
    check_store(uri)
