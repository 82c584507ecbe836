"""A tracking server that says no: 401 (no or wrong login) and 403 (no permission) are one
line naming the server and what was refused, sent once, never retried or queued as outages.

The server here is a stand-in on 127.0.0.1 that answers as MLflow's auth app does (plain-text
401 with ``WWW-Authenticate``, plain-text 403, its permission API) and records every request
with the credentials it carried, so "no retries" is a count, not a timing. The real auth app
is exercised end to end in tests/e2e/test_tracking_server.py.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from litpipe.tracking.client import TrackingError, describe, is_outage, refusal_status
from litpipe.tracking.run import TrackedRun
from litpipe.tracking.store import _tls_context, check_permission, check_store

USER = "ci"


class FakeAuthServer:
    """Answers /health with 200 and each other path with ``answers[path]`` (status, body);
    unknown paths get ``default``. ``seen`` lists (method, path, user or None)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, object]] = {}
        self.default: tuple[int, object] = (401, "You are not authenticated.")
        self.seen: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = urlparse(self.path).path
                auth = self.headers.get("Authorization", "")
                user = (base64.b64decode(auth[6:]).decode().split(":")[0]
                        if auth.startswith("Basic ") else None)
                server.seen.append((self.command, path, user))
                status, body = (200, "OK") if path == "/health" else \
                    server.answers.get(path, server.default)
                data = (json.dumps(body) if isinstance(body, dict) else str(body)).encode()
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 (http.server API)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def api_calls(self) -> list[tuple[str, str, str | None]]:
        return [s for s in self.seen if s[1] != "/health"]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAuthServer]:
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    srv = FakeAuthServer()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


def login(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str = "pw") -> None:
    if user is None:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def one_line(exc: pytest.ExceptionInfo[TrackingError]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_wrong_password_is_one_line_after_one_request(server: FakeAuthServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    login(monkeypatch, USER, "wrong")
    with pytest.raises(TrackingError) as exc:
        check_store(server.uri)
    text = one_line(exc)
    assert text.startswith(f"MLflow tracking server {server.uri} refused a search of its "
                           "experiments: HTTP 401"), text
    assert f"the login of user {USER!r} was refused" in text and "wrong" not in text
    # The probe sent the login MLflow's client would send, once: no retry.
    assert server.api_calls() == [("GET", "/api/2.0/mlflow/experiments/search", USER)]


def test_anonymous_client_is_told_to_log_in(server: FakeAuthServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    login(monkeypatch, None)
    with pytest.raises(TrackingError, match="HTTP 401, a login is required: set "
                       "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        check_store(server.uri)
    assert server.api_calls() == [("GET", "/api/2.0/mlflow/experiments/search", None)]


def test_forbidden_probe_names_the_user(server: FakeAuthServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    login(monkeypatch, USER)
    server.default = (403, "Permission denied")
    with pytest.raises(TrackingError) as exc:
        check_store(server.uri)
    assert f"HTTP 403, user {USER!r} has no permission" in one_line(exc)


def permission_api(server: FakeAuthServer, permission: str, is_admin: bool = False) -> None:
    """The auth app's answers for user ci on experiment 'litpipe' (id 7)."""
    server.answers.update({
        "/api/2.0/mlflow/users/current": (200, {"user": {"username": USER,
                                                         "is_admin": is_admin}}),
        "/api/2.0/mlflow/experiments/get-by-name": (200, {"experiment": {"experiment_id": "7"}}),
        "/api/3.0/mlflow/users/permissions/get": (200, {"allowed": permission != "READ",
                                                        "permission": permission}),
    })


def test_read_only_login_is_refused_before_any_work(server: FakeAuthServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    login(monkeypatch, USER)
    permission_api(server, "READ")
    with pytest.raises(TrackingError) as exc:
        check_permission(server.uri, "experiment", "litpipe", "EDIT", "the train stage logs "
                         "its run there")
    text = one_line(exc)
    assert text == (f"MLflow tracking server {server.uri} gives user 'ci' only READ on "
                    "experiment 'litpipe', and the train stage logs its run there (needs "
                    "EDIT): ask the server's admin to grant it (docs/team.md)")
    assert all(method == "GET" for method, _, _ in server.api_calls())  # it wrote nothing


@pytest.mark.parametrize("permission,is_admin", [("EDIT", False), ("MANAGE", False),
                                                 ("NO_PERMISSIONS", True)])
def test_enough_permission_passes(server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch,
                                  permission: str, is_admin: bool) -> None:
    login(monkeypatch, USER)
    permission_api(server, permission, is_admin)
    check_permission(server.uri, "experiment", "litpipe", "EDIT", "logging")


def test_server_without_logins_is_not_asked(server: FakeAuthServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """No auth app, no permission API (404): nothing to check, no error."""
    login(monkeypatch, USER)
    server.default = (404, "Not Found")
    check_permission(server.uri, "experiment", "litpipe", "EDIT", "logging")
    assert [path for _, path, _ in server.api_calls()] == ["/api/2.0/mlflow/users/current"]


def test_refused_write_is_not_queued_as_an_outage(server: FakeAuthServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A 403 on a run with an outbox: one line, one request, nothing queued (an outage
    would be queued and retried until the server "comes back", which it never would)."""
    login(monkeypatch, USER)
    server.default = (403, "Permission denied")
    outbox = tmp_path / "outbox.jsonl"
    run = TrackedRun(server.uri, "0123456789abcdef", outbox=outbox)
    with pytest.raises(TrackingError) as exc:
        run.log_metrics({"val_acc": 0.5}, step=0)
    text = one_line(exc)
    assert text.startswith(f"MLflow tracking server {server.uri} refused a write to run "
                           "0123456789abcdef: HTTP 403, user 'ci' has no permission"), text
    assert not outbox.exists() and run.pending() == 0
    assert [path for _, path, _ in server.api_calls()] == ["/api/2.0/mlflow/runs/log-batch"]


def test_refusals_are_not_outages() -> None:
    import requests
    from mlflow.exceptions import MlflowException, get_error_code

    for status in (401, 403):
        exc = MlflowException("API request failed", error_code=get_error_code(status))
        assert refusal_status(exc) == status and not is_outage(exc)
        response = requests.Response()
        response.status_code = status
        http = requests.HTTPError(f"{status} Client Error", response=response)
        assert refusal_status(http) == status and not is_outage(http)
        assert describe(http).startswith(f"HTTP {status}")
    assert is_outage(requests.ConnectionError("connection refused"))
    assert refusal_status(requests.ConnectionError("connection refused")) is None


def test_probe_trusts_what_mlflow_trusts(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    """Behind a team's TLS proxy with its own CA, the probe checks certificates as MLflow's
    client does (MLFLOW_TRACKING_SERVER_CERT_PATH, MLFLOW_TRACKING_INSECURE_TLS), and a CA
    file that is missing is one line naming the server, not a traceback."""
    import ssl

    for name in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "REQUESTS_CA_BUNDLE",
                 "MLFLOW_TRACKING_INSECURE_TLS"):
        monkeypatch.delenv(name, raising=False)
    assert _tls_context() is None  # the system's CAs, as for any https URL
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    assert _tls_context().verify_mode == ssl.CERT_NONE
    monkeypatch.delenv("MLFLOW_TRACKING_INSECURE_TLS")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tmp_path / "missing-ca.pem"))
    uri = "https://127.0.0.1:9"
    with pytest.raises(TrackingError, match=f"^MLflow tracking server {uri} is unreachable"):
        check_store(uri, timeout=1.0)
