"""A misbehaving HTTP mirror for the downloader's tests.

``http.server`` in a thread on 127.0.0.1 (ephemeral port), where each path has a behaviour —
ok, 404, 503-then-ok, truncated, corrupted, stalled, trickled — so every way a mirror fails can
be reproduced on loopback in milliseconds. The files it serves come from
:mod:`tests.helpers.datasets`.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_S = 3.0  # how long a "stall" path sleeps before answering: > any test timeout, bounded
TRICKLE_CHUNK = 256  # bytes per write of a "trickle" path ...
TRICKLE_PAUSE_S = 0.05  # ... and the pause between writes (about 5 kB/s)
# What an "auth" path requires: made per test session, so no password sits in the repository
# (tests/test_secrets.py refuses committed ones).
AUTH_USER = "reader"
AUTH_PASSWORD = secrets.token_hex(8)


class Routes:
    """URL path -> (behaviour, payload), shared with the handler threads; records hits.

    Behaviours: ``ok``; ``404``; ``flaky`` (503 on the first request, then ok); ``auth``
    (401 unless HTTP basic auth with ``AUTH_USER``/``AUTH_PASSWORD``);
    ``truncate`` (Content-Length of the whole body, half of it sent, connection closed);
    ``corrupt`` (bytes in the middle flipped); ``stall`` (no answer for ``STALL_S``);
    ``trickle`` (body sent slowly, to be killed mid-stream).
    """

    def __init__(self) -> None:
        self.table: dict[str, tuple[str, bytes]] = {}
        self.hits: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()  # set at shutdown: ends stalls and trickles early

    def set(self, prefix: str, files: dict[str, bytes], behaviour: str = "ok") -> None:
        for name, data in files.items():
            self.table[f"/{prefix}/{name}"] = (behaviour, data)

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits.count(path)


def make_handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            with routes.lock:
                routes.hits.append(self.path)
                seen = routes.hits.count(self.path)
            behaviour, data = routes.table.get(self.path, ("404", b""))
            if behaviour == "404":
                self.send_error(404, "Not Found")
                return
            if behaviour == "auth" and self.headers.get("Authorization") != "Basic " + \
                    base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode():
                self.send_error(401, "Unauthorized")
                return
            if behaviour == "flaky" and seen == 1:
                self.send_error(503, "Service Unavailable")
                return
            if behaviour == "stall" and routes.stop.wait(STALL_S):
                return
            if behaviour == "corrupt":
                mid = len(data) // 2
                data = data[:mid] + bytes(b ^ 0xFF for b in data[mid: mid + 16]) + data[mid + 16:]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                if behaviour == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif behaviour == "trickle":
                    for i in range(0, len(data), TRICKLE_CHUNK):
                        self.wfile.write(data[i: i + TRICKLE_CHUNK])
                        self.wfile.flush()
                        if routes.stop.wait(TRICKLE_PAUSE_S):
                            return
                else:
                    self.wfile.write(data)
            except OSError:  # the client gave up (timeout, killed): nothing to do
                pass

    return Handler


@contextlib.contextmanager
def serve(routes: Routes) -> Iterator[str]:
    """Run an HTTP server for ``routes`` on 127.0.0.1 in a thread; yield its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(routes))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        routes.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
