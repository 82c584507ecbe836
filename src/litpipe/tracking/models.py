"""Registered models: parse a ``models:/`` URI, look versions and aliases up, download,
tag and alias versions.

MLflow has deprecated registry *stages* in favour of *aliases*, movable names for one
version each. litpipe uses two: the export stage sets ``candidate`` on the version it
registers (:mod:`litpipe.tracking.served`); ``litpipe gate --promote`` moves ``champion``
to the version trained by ``models/run.json``'s run once the gate passes on the default
branch. Users and servers then ask for ``models:/litpipe-classifier@champion``.

Every read here pins a version number first and then reads that version, so an alias that
moves in between cannot mix two versions. Errors are one line naming the store or URI (and,
on a server with logins, who was refused: moving ``champion`` is reserved to the gate's
identity by the team server, docs/team.md).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litpipe.errors import LitpipeError
from litpipe.tracking.client import (
    TrackingError,
    describe,
    env_restored,
    is_missing,
    mlflow_client,
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
# A version's source when it holds an MLflow 3 logged model: models:/<its model id>.
LOGGED_MODEL_SOURCE = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)/?$")


class RegistryError(LitpipeError):
    """A registered model, version or alias is not there; the message says where to look."""


@dataclass(frozen=True)
class Version:
    """One registered model version: what it is called and where it came from."""

    name: str
    version: str
    run_id: str | None
    model_id: str | None = None  # the MLflow 3 logged model it holds (its metrics, datasets)

    def __str__(self) -> str:
        return f"{self.name} version {self.version}"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (the export's ``model.onnx``: identifies the version holding it)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(mv: Any) -> Version:
    # MLflow's SQL registry (SQLite, or a server over PostgreSQL) answers model_id None and
    # keeps the logged model only in the version's source, models:/<model id>.
    source = LOGGED_MODEL_SOURCE.match(str(getattr(mv, "source", "") or ""))
    model_id = mv.model_id or (source["model_id"] if source else None)
    return Version(mv.name, str(mv.version), mv.run_id or None, model_id)


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version or "latest" or None, alias or None)`` of a registry URI."""
    match = MODEL_URI.match(model_uri)
    if match is None:
        raise RegistryError(f"{model_uri}: not a registered-model URI; use {URI_FORMS}")
    return match["name"], match["version"], match["alias"]


def resolve(model_uri: str, uri: str) -> Version:
    """The version ``model_uri`` (a registry URI) names in the store at ``uri``."""
    name, number, alias = parse_model_uri(model_uri)
    client = mlflow_client(uri)
    try:
        client.get_registered_model(name)
    except Exception as exc:
        if not is_missing(exc):
            raise TrackingError(f"MLflow tracking store {uri}: cannot read the registry "
                                f"({describe(exc)})") from None
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
        if not is_missing(exc):
            raise TrackingError(f"MLflow tracking store {uri}: cannot read {model_uri} "
                                f"({describe(exc)})") from None
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

    client = mlflow_client(uri)
    # MLflow draws a progress bar on stderr per download; `litpipe predict` keeps stderr for
    # what the user must read (and a failure to one line).
    try:
        with env_restored(PROGRESS_BAR):
            os.environ[PROGRESS_BAR] = "false"
            source = client.get_model_version_download_uri(version.name, version.version)
            local = mlflow.artifacts.download_artifacts(artifact_uri=source,
                                                        dst_path=str(dest), tracking_uri=uri)
    except Exception as exc:
        raise TrackingError(f"{version} in {uri}: cannot download its files "
                            f"({describe(exc)})") from None
    return Path(local)


def versions_of_run(name: str, run_id: str, uri: str) -> list[tuple[Version, str | None]]:
    """Every version of ``name`` registered from ``run_id``, oldest first, each with the
    SHA-256 of the ``model.onnx`` it holds (from its tag; None if untagged)."""
    client = mlflow_client(uri)
    try:
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except Exception as exc:
        raise TrackingError(f"MLflow tracking store {uri}: cannot search the registry "
                            f"({describe(exc)})") from None
    return [(_version(mv), (mv.tags or {}).get(ONNX_SHA256_TAG))
            for mv in sorted(found, key=lambda mv: int(mv.version))]


def set_alias(version: Version, alias: str, uri: str) -> None:
    """Point ``alias`` of ``version.name`` at ``version`` (moving it from any other)."""
    client = mlflow_client(uri)
    try:
        client.set_registered_model_alias(version.name, alias, version.version)
    except Exception as exc:
        raise TrackingError(f"MLflow tracking store {uri}: cannot set alias {alias!r} on "
                            f"{version} ({describe(exc)})") from None
