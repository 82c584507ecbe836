"""The model registry: the served model's registration, aliases, lookups, downloads.

MLflow has deprecated registry *stages* in favour of *aliases*, movable names for one
version each. litpipe uses two: the export stage sets ``candidate`` on the version it
registers; ``litpipe gate --promote`` moves ``champion`` to the version trained by
``models/run.json``'s run once the gate passes on the default branch. Users and servers
then ask for ``models:/litpipe-classifier@champion``.

Every read here pins a version number first and then reads that version, so an alias that
moves in between cannot mix two versions. Errors are one line naming the store or URI.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litpipe.errors import LitpipeError
from litpipe.repo import find_repo_root
from litpipe.tracking.run import TrackedRun, _is_outage, _tracking_error
from litpipe.tracking.store import (
    TrackingError,
    bounded_http_retries,
    check_store,
    resolve_tracking_uri,
    sqlite_path,
)

CANDIDATE = "candidate"  # set by the export stage on the version it registers
CHAMPION = "champion"  # moved by a passing gate on the default branch
ONNX_SHA256_TAG = "litpipe.onnx_sha256"  # on each version: which model.onnx it holds
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"

# models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS (MLflow's forms for a
# registered model; aliases are letters, digits, _ and -).
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)"
                       r"(?:/(?P<version>\d+|latest)|@(?P<alias>[\w-]+))/?$")
URI_FORMS = "models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest"


class RegistryError(LitpipeError):
    """A registered model, version or alias is not there; the message says where to look."""


@dataclass(frozen=True)
class Version:
    """One registered model version: what it is called and where it came from."""

    name: str
    version: str
    run_id: str | None

    def __str__(self) -> str:
        return f"{self.name} version {self.version}"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (the export's ``model.onnx``: identifies the version holding it)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reading_uri(root: Path | None = None) -> str:
    """The store ``litpipe predict --model`` reads: the one the pipeline writes to.

    ``$MLFLOW_TRACKING_URI``, else ``tracking.uri`` of ``params.yaml`` at the repository
    root, else the SQLite DB there. params.yaml is read as plain YAML, not validated: a
    typo in a training knob must not stop anyone from using a registered model.
    """
    import yaml

    from litpipe.config import TrackingConfig

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


def _client(uri: str) -> Any:
    bounded_http_retries()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _missing(exc: BaseException) -> bool:
    """True when MLflow said "no such registered model / version / alias"."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _version(mv: Any) -> Version:
    return Version(mv.name, str(mv.version), mv.run_id or None)


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version or "latest" or None, alias or None)`` of a registry URI."""
    match = MODEL_URI.match(model_uri)
    if match is None:
        raise RegistryError(f"{model_uri}: not a registered-model URI; use {URI_FORMS}")
    return match["name"], match["version"], match["alias"]


def resolve(model_uri: str, uri: str) -> Version:
    """The version ``model_uri`` (a registry URI) names in the store at ``uri``."""
    name, number, alias = parse_model_uri(model_uri)
    client = _client(uri)
    try:
        client.get_registered_model(name)
    except Exception as exc:
        if not _missing(exc):
            raise TrackingError(f"MLflow tracking store {uri}: cannot read the registry "
                                f"({_first_line(exc)})") from None
        raise RegistryError(f"{model_uri}: no registered model {name!r} in {uri}; run "
                            "`dvc repro` (the export stage registers it) or set "
                            "MLFLOW_TRACKING_URI to the store that holds it") from None
    try:
        if alias is not None:
            return _version(client.get_model_version_by_alias(name, alias))
        if number == "latest":
            found = client.search_model_versions(f"name='{name}'")
            if not found:
                raise RegistryError(f"{model_uri}: {name!r} has no versions in {uri}")
            return _version(max(found, key=lambda mv: int(mv.version)))
        return _version(client.get_model_version(name, number))
    except RegistryError:
        raise
    except Exception as exc:
        if not _missing(exc):
            raise TrackingError(f"MLflow tracking store {uri}: cannot read {model_uri} "
                                f"({_first_line(exc)})") from None
        if alias is not None:
            hint = ("`litpipe gate --promote` on the default branch sets it"
                    if alias == CHAMPION else "set it, or use models:/NAME/VERSION")
            raise RegistryError(f"{model_uri}: no version of {name!r} has the alias "
                                f"{alias!r} in {uri}; {hint}") from None
        raise RegistryError(f"{model_uri}: {name!r} has no version {number} in "
                            f"{uri}") from None


def download(version: Version, uri: str, dest: Path) -> Path:
    """Download ``version``'s model files into ``dest``; return the model directory.

    The whole MLflow model comes down (MLmodel, the code, ``artifacts/model.onnx`` and
    ``artifacts/model.json``); it is small (the ONNX file dominates).
    """
    import mlflow

    client = _client(uri)
    # MLflow draws a progress bar on stderr per download; `litpipe predict` keeps stderr for
    # what the user must read (and a failure to one line).
    try:
        with _env_restored(PROGRESS_BAR):
            os.environ[PROGRESS_BAR] = "false"
            source = client.get_model_version_download_uri(version.name, version.version)
            local = mlflow.artifacts.download_artifacts(artifact_uri=source,
                                                        dst_path=str(dest), tracking_uri=uri)
    except Exception as exc:
        raise TrackingError(f"{version} in {uri}: cannot download its files "
                            f"({_first_line(exc)})") from None
    return Path(local)


def versions_of_run(name: str, run_id: str, uri: str) -> list[tuple[Version, str | None]]:
    """Every version of ``name`` registered from ``run_id``, oldest first, each with the
    SHA-256 of the ``model.onnx`` it holds (from its tag; None if untagged)."""
    client = _client(uri)
    try:
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except Exception as exc:
        raise TrackingError(f"MLflow tracking store {uri}: cannot search the registry "
                            f"({_first_line(exc)})") from None
    return [(_version(mv), (mv.tags or {}).get(ONNX_SHA256_TAG))
            for mv in sorted(found, key=lambda mv: int(mv.version))]


def set_alias(version: Version, alias: str, uri: str) -> None:
    """Point ``alias`` of ``version.name`` at ``version`` (moving it from any other)."""
    client = _client(uri)
    try:
        client.set_registered_model_alias(version.name, alias, version.version)
    except Exception as exc:
        raise TrackingError(f"MLflow tracking store {uri}: cannot set alias {alias!r} on "
                            f"{version} ({_first_line(exc)})") from None


def tag_version(version: Version, tags: dict[str, str], uri: str) -> None:
    """Set tags on a model version."""
    client = _client(uri)
    try:
        for key, value in tags.items():
            client.set_model_version_tag(version.name, version.version, key, value)
    except Exception as exc:
        raise TrackingError(f"MLflow tracking store {uri}: cannot tag {version} "
                            f"({_first_line(exc)})") from None


# ------------------------------------------------------------------ the served model

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
def _env_restored(*names: str) -> Iterator[None]:
    """Whatever the block does to the environment variables ``names``, put them back."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
    with _env_restored("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
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
    the MLmodel file. The version is tagged with the SHA-256 of its ``model.onnx``: that is
    how a promotion finds the version holding the work tree's export.

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
                registered_model_name=registered_model,
            )
    except Exception as exc:
        if _is_outage(exc):
            raise _tracking_error(run.uri, "could not store the model", exc) from None
        raise
    number = getattr(info, "registered_model_version", None)
    if number is None:
        return None
    version = Version(registered_model, str(number), run.run_id)
    tag_version(version, {ONNX_SHA256_TAG: file_sha256(onnx_path)}, run.uri)
    set_alias(version, CANDIDATE, run.uri)
    return str(number)
