"""MLflow's client as litpipe uses it: bounded waits, and failures as one line.

Every part of litpipe that talks to MLflow imports this module, and importing it bounds
MLflow's HTTP retries: by default MLflow's client retries for minutes, and a stage that
hangs that long on a dead server looks frozen. The environment still wins, for anyone who
wants MLflow's own values.

A server with authentication (``mlflow server --app-name basic-auth``) answers HTTP 401
(no or wrong login) or 403 (no permission). Those are *refusals*, not outages: retrying or
queueing a write until the server "comes back" would never succeed, so :func:`is_outage`
says no, and :func:`describe` words them as what was refused and whom to ask. MLflow's
client itself sends ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (basic auth)
and does not retry 401/403 (only 408, 429 and 5xx).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litpipe.errors import LitpipeError, first_line

# MLflow's HTTP client: at most 3 tries, each waiting at most 15 s, with ~1 s and ~2 s
# pauses. A dead server (connection refused) costs about 3 s; a hanging one under a minute.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
for _key, _value in HTTP_LIMITS.items():  # the one place the retries are bounded
    os.environ.setdefault(_key, _value)


class TrackingError(LitpipeError):
    """MLflow cannot be used; the message names the URI or file and what to do."""


def mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` for the tracking store (and model registry) at ``uri``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# MLflow's names for HTTP 401 and 403 (its client maps a non-JSON error answer to these).
_REFUSAL_CODES = {"UNAUTHENTICATED": 401, "CUSTOMER_UNAUTHORIZED": 401,
                  "PERMISSION_DENIED": 403}


def refusal_status(exc: BaseException) -> int | None:
    """401 or 403 when ``exc`` is the server refusing the login or the permission, else None.

    MLflow's REST client raises ``MlflowException`` with the status as its error code; its
    artifact client (``mlflow-artifacts:`` uploads) raises ``requests.HTTPError``.
    """
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if type(exc).__module__.startswith("requests") and status in (401, 403):
        return int(status)
    return _REFUSAL_CODES.get(str(getattr(exc, "error_code", "")))


def refusal_reason(status: int) -> str:
    """What a 401 or 403 means for the identity in this environment, and what to do."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 401 and not user:
        return ("HTTP 401, a login is required: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD")
    if status == 401:
        return (f"HTTP 401, the login of user {user!r} was refused: check "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    who = f"user {user!r}" if user else "an anonymous client"
    return (f"HTTP 403, {who} has no permission for this: ask the server's admin to grant "
            "it (docs/team.md)")


def describe(exc: BaseException) -> str:
    """``exc`` as one line: the refusal spelled out for 401/403, else its first line."""
    status = refusal_status(exc)
    return refusal_reason(status) if status else first_line(exc)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means "the server could not be reached", not "it said no"."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, RestException) or refusal_status(exc):  # the server answered: no
        return False
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and 400 <= status < 500:  # an HTTP client error: a refusal
        return False
    return isinstance(exc, MlflowException | OSError | TimeoutError) or \
        type(exc).__module__.startswith(("requests", "urllib3"))


def is_missing(exc: BaseException) -> bool:
    """True when MLflow said "no such registered model / version / alias"."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def tracking_error(uri: str, what: str, exc: BaseException) -> TrackingError:
    """``MLflow tracking server URI WHAT: <exc in one line>`` (a refusal says who was
    refused and what to do)."""
    return TrackingError(f"MLflow tracking server {uri} {what}: {describe(exc)}")


@contextmanager
def env_restored(*names: str) -> Iterator[None]:
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
