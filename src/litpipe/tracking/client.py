"""MLflow's client as litpipe uses it: bounded waits, and failures as one line.

Every part of litpipe that talks to MLflow imports this module, and importing it bounds
MLflow's HTTP retries: by default MLflow's client retries for minutes, and a stage that
hangs that long on a dead server looks frozen. The environment still wins, for anyone who
wants MLflow's own values.
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


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means "the server could not be reached", not "it said no"."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, RestException):  # the server answered with an API error
        return False
    return isinstance(exc, MlflowException | OSError | TimeoutError) or \
        type(exc).__module__.startswith(("requests", "urllib3"))


def is_missing(exc: BaseException) -> bool:
    """True when MLflow said "no such registered model / version / alias"."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def tracking_error(uri: str, what: str, exc: BaseException) -> TrackingError:
    """``MLflow tracking server URI WHAT: <the first line of exc>``."""
    return TrackingError(f"MLflow tracking server {uri} {what}: {first_line(exc)}")


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
