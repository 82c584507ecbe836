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
  On a team server with logins (docs/team.md) the same probe sends the credentials MLflow's
  client will send (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``), so a wrong
  password is one line before any work, and :func:`check_permission` asks the server for
  the user's effective permission on what a stage will write (read-only: nothing is
  created to find out).
* **Creating the SQLite schema once.** MLflow creates and migrates its schema on first use,
  and two processes doing that at once (parallel queued experiments on a fresh clone) break
  each other. :func:`check_store` does it under a file lock first.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from litpipe.locks import locked
from litpipe.repo import find_repo_root
from litpipe.schema import TrackingConfig
from litpipe.tracking.client import TrackingError, refusal_reason

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
CHECK_TIMEOUT_S = 5.0
# MLflow's permission levels, weakest first (its auth app; NO_PERMISSIONS: nothing).
LEVELS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")


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
        # Needs a login where the server has them (any valid one: results are filtered).
        _probe(uri, f"{base}/api/2.0/mlflow/experiments/search?max_results=1",
               "answers /health but its API does not respond", timeout,
               refused="a search of its experiments")
    _CHECKED.add(uri)


def check_tracking(cfg: TrackingConfig) -> None:
    """:func:`check_store` for the tracking store params name, in the process that will
    talk to it: rank 0 of a distributed run (its rank is read from the environment the
    launcher sets, as Lightning does, so this runs before torch is imported)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "0") != "0":
            return
    uri = resolve_tracking_uri(cfg)
    check_store(uri)
    check_permission(uri, "experiment", cfg.experiment, "EDIT",
                     "the train stage logs its run there")


def check_permission(uri: str, kind: str, name: str, need: str, purpose: str,
                     timeout: float = CHECK_TIMEOUT_S, run_id: str | None = None) -> None:
    """Fail in seconds, with one line, when the user in ``MLFLOW_TRACKING_USERNAME`` has less
    than ``need`` (READ, EDIT, MANAGE) on the ``kind`` (``experiment`` or
    ``registered_model``) called ``name`` at the server ``uri``.

    Without it a READ-only login would train for minutes and then be refused its first
    write. The server is asked, read-only, for the user's effective permission (MLflow's
    ``users/permissions/get``, which resolves grants and ``default_permission`` as its own
    checks do). Nothing to check, so no error: a store that is not an HTTP server, no
    username (an anonymous client was already refused by :func:`check_store` if the server
    has logins), a server without logins (no such API), an admin, and a resource that does
    not exist yet (the stage creates it, and its creator owns it).

    ``run_id``: check the experiment that run belongs to (``name`` is then unused).
    """
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if urlparse(uri).scheme not in ("http", "https") or not user:
        return
    base = uri.rstrip("/")
    me = _get_json(uri, f"{base}/api/2.0/mlflow/users/current", timeout,
                   refused="asking who is logged in")
    if me is None or me.get("user", {}).get("is_admin"):
        return
    if kind == "experiment" and run_id is not None:
        found = _get_json(uri, f"{base}/api/2.0/mlflow/runs/get?run_id={quote(run_id)}",
                          timeout, refused=f"reading run {run_id}")
        if found is None:
            return
        resource_id = str(found["run"]["info"]["experiment_id"])
    elif kind == "experiment":
        found = _get_json(uri, f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                          f"experiment_name={quote(name)}", timeout,
                          refused=f"reading experiment {name!r}")
        if found is None:
            return
        resource_id = str(found["experiment"]["experiment_id"])
    else:
        found = _get_json(uri, f"{base}/api/2.0/mlflow/registered-models/get?name={quote(name)}",
                          timeout, refused=f"reading registered model {name!r}")
        if found is None:
            return
        resource_id = name
    answer = _get_json(uri, f"{base}/api/3.0/mlflow/users/permissions/get?username="
                       f"{quote(user)}&resource_type={kind}&resource_id={quote(resource_id)}",
                       timeout, refused=f"telling user {user!r} its permissions")
    if answer is None:
        return
    has = str(answer.get("permission", "NO_PERMISSIONS"))
    rank = LEVELS.index(has) if has in LEVELS else -1
    if rank < LEVELS.index(need):
        shown = (f"the experiment of run {run_id}" if run_id is not None
                 else f"{kind.replace('_', ' ')} {name!r}")
        raise TrackingError(
            f"MLflow tracking server {uri} gives user {user!r} only {has} on {shown}, and "
            f"{purpose} (needs {need}): ask the server's admin to grant it (docs/team.md)")


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's own client sends, from the same environment variables:
    basic auth when both the username and the password are set, else a bearer token."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password is not None:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    if token:
        return {"Authorization": f"Bearer {token}"}
    return {}


def _tls_context() -> ssl.SSLContext | None:
    """The certificate checks MLflow's client makes for an https server, so the probe does
    not fail where MLflow would succeed: ``MLFLOW_TRACKING_SERVER_CERT_PATH`` (a team's own
    CA, e.g. behind its TLS proxy) or ``REQUESTS_CA_BUNDLE``; ``MLFLOW_TRACKING_INSECURE_TLS``
    turns the check off, as it does for MLflow."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return ssl._create_unverified_context()  # noqa: S323 (the user asked for it)
    cafile = (os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
              or os.environ.get("REQUESTS_CA_BUNDLE"))
    return ssl.create_default_context(cafile=cafile) if cafile else None


def _probe(uri: str, url: str, what: str, timeout: float, refused: str = "",
           limit: int = 64) -> bytes | None:
    """GET ``url`` with the client's credentials; up to ``limit`` bytes of the answer, or
    None for a 4xx other than 401/403. One-line TrackingErrors: unreachable or hanging
    (``what``), HTTP 5xx, or a refusal (401/403) of ``refused``."""
    request = urllib.request.Request(url, headers=_auth_headers())
    try:
        context = _tls_context() if url.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=timeout,  # noqa: S310
                                    context=context) as resp:
            return bytes(resp.read(limit))
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise TrackingError(f"MLflow tracking server {uri} refused {refused or url}: "
                                f"{refusal_reason(exc.code)}") from None
        if exc.code >= 500:
            raise TrackingError(f"MLflow tracking server {uri} answered HTTP {exc.code} at "
                                f"{url}") from None
        return None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {uri} {what} ({reason}; waited at most {timeout:g} s). "
            "Start or fix it, or unset MLFLOW_TRACKING_URI / "
            "tracking.uri to use the local SQLite DB.") from None


def _get_json(uri: str, url: str, timeout: float, refused: str) -> dict[str, Any] | None:
    """The JSON object at ``url`` (None: not found, e.g. no such resource or API)."""
    body = _probe(uri, url, "does not respond", timeout, refused=refused, limit=1 << 20)
    if body is None:
        return None
    try:
        found = json.loads(body)
    except ValueError:
        raise TrackingError(f"MLflow tracking server {uri} answered {url} with something "
                            "that is not JSON; is it an MLflow server?") from None
    return found if isinstance(found, dict) else None


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
