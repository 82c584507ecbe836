"""The team server's login check: MLflow's basic auth, plus the one rule its permissions
cannot express, "only the gate moves ``champion``".

``scripts/mlflow_server.sh`` runs ``mlflow server --app-name basic-auth`` with this
function as the auth app's ``authorization_function`` (a key of its ini file, which
``MLFLOW_AUTH_CONFIG_PATH`` names). Everything else is MLflow's own: the users, their
passwords and their READ / EDIT / MANAGE grants on experiments and registered models.

Why the extra rule: MLflow checks aliases against the registered model as a whole. Setting
*any* alias needs EDIT on the model, and the CI identity needs EDIT to register versions
and move ``candidate``, so MLflow alone would let CI (or anything holding its password) move
``champion``, which every ``models:/litpipe-classifier@champion`` client serves. Here,
setting or deleting a protected alias (``protected_aliases``, default ``champion``) is
refused with HTTP 403 unless the user is an admin or listed in ``alias_owners`` (the
identity ``litpipe gate --promote`` runs as). Renaming a registered model, which EDIT also
allows in MLflow, is reserved to admins: it would carry ``champion`` away and free the name
for a model whose owner sets its own. Both lists are in the ``[litpipe]`` section of the
same ini file, read on each such request, so ``scripts/mlflow_server.sh add-user NAME
--gate`` takes effect without a restart.

The check runs before MLflow's own permission check, and only after the login succeeded:
an anonymous or wrong login still gets MLflow's 401.
"""

from __future__ import annotations

import configparser
import os

from flask import Response, make_response, request
from mlflow.server.auth import authenticate_request_basic_auth, store
from werkzeug.datastructures import Authorization

SECTION = "litpipe"
DEFAULT_PROTECTED = "champion"
ALIAS_PATH = "/mlflow/registered-models/alias"  # after /api/2.0 or /ajax-api/2.0
RENAME_PATH = "/mlflow/registered-models/rename"


def _names(value: str) -> set[str]:
    """A comma- or space-separated list from the ini file, as a set."""
    return {name for name in value.replace(",", " ").split() if name}


def alias_rules() -> tuple[set[str], set[str]]:
    """``(protected aliases, the users who may move them)`` from the auth ini file."""
    config = configparser.ConfigParser()
    config.read(os.environ.get("MLFLOW_AUTH_CONFIG_PATH", ""))
    section = config[SECTION] if config.has_section(SECTION) else {}
    return (_names(section.get("protected_aliases", DEFAULT_PROTECTED)),
            _names(section.get("alias_owners", "")))


def _requested_aliases() -> set[str | None]:
    """The alias(es) a set/delete-alias request names, from its query and its JSON body;
    ``{None}`` when it names none (treated as protected: fail closed)."""
    body = request.get_json(silent=True)
    found = {request.args.get("alias"), body.get("alias") if isinstance(body, dict) else None}
    named = {a for a in found if a}
    return set(named) if named else {None}


def is_rename() -> bool:
    """Whether the current request renames a registered model."""
    return request.path.rstrip("/").endswith(RENAME_PATH) and request.method == "POST"


def moves_protected_alias(protected: set[str]) -> bool:
    """Whether the current request sets or deletes one of the ``protected`` aliases."""
    if request.path.rstrip("/").endswith(ALIAS_PATH) and request.method in ("POST", "DELETE"):
        return any(alias is None or alias in protected for alias in _requested_aliases())
    return False


def authenticate_request() -> Authorization | Response:
    """MLflow's basic-auth login, then the alias rule (see the module's docstring)."""
    auth = authenticate_request_basic_auth()
    if isinstance(auth, Response) or auth is None:
        return auth
    protected, owners = alias_rules()
    rename = is_rename()
    if not (rename or moves_protected_alias(protected)):
        return auth
    username = auth.username or ""
    if store.get_user(username).is_admin or (username in owners and not rename):
        return auth
    if rename:
        why = "only an admin may rename a registered model on this server"
    else:
        why = (f"only the gate's identity ({', '.join(sorted(owners)) or 'none set'}) or an "
               f"admin may move the alias(es) {', '.join(sorted(protected))} on this server")
    refusal = make_response(f"Permission denied: {why}")
    refusal.status_code = 403
    return refusal
