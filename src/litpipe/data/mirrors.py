"""Fetching one file from one mirror: ``file://``, ``http(s)://`` or a directory.

Mirrors fail in every way a network can (404, stalls, refused connections, bodies cut short),
so every failure is sorted into :class:`Permanent` (retrying the same mirror cannot help: a
404, a bad certificate) or :class:`Transient` (a timeout, a truncated body, HTTP 5xx/429),
which the download stage uses to decide between a retry and the next mirror. Messages never
show a ``user:password@`` that a private mirror's URL may carry.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from litpipe import __version__
from litpipe.errors import LitpipeError

CHUNK = 1 << 16
# HTTP statuses worth retrying on the same mirror; every other 4xx is final for that mirror.
_RETRYABLE_HTTP = {408, 425, 429}


class DownloadError(LitpipeError):
    """The dataset could not be fetched and verified; the message says what was tried."""


class Permanent(Exception):
    """A failure that retrying the same mirror cannot fix (404, digest mismatch, no file)."""


class Transient(Exception):
    """A failure that may go away on retry (timeout, truncated body, HTTP 5xx)."""


def file_url(mirror: str, name: str) -> str:
    """URL of ``name`` on ``mirror`` (a URL with or without trailing slash, or a directory)."""
    if "://" not in mirror:
        return (Path(mirror).expanduser().resolve() / name).as_uri()
    return mirror.rstrip("/") + "/" + name


def redact(url: str) -> str:
    """``url`` without ``user:password@``: messages and the manifest must not leak secrets."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _describe(exc: BaseException, timeout: float) -> str:
    """A short human reason for a network exception."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".rstrip()
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return _describe(exc.reason, timeout)
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"timed out (no data for {timeout:g} s, data.timeout)"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without a response"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, socket.gaierror):
        return f"host name lookup failed ({exc.strerror or exc})"
    if isinstance(exc, http.client.IncompleteRead):
        return f"truncated: got {len(exc.partial)} bytes, then the connection closed"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _is_permanent_network_error(exc: BaseException) -> bool:
    """HTTP 4xx (but 408/425/429), a bad certificate or a malformed URL: retrying cannot help."""
    if isinstance(exc, urllib.error.HTTPError):
        return 400 <= exc.code < 500 and exc.code not in _RETRYABLE_HTTP
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, ssl.SSLCertVerificationError)
    return isinstance(exc, ValueError)


def fetch(url: str, dest: Path, timeout: float, progress: bool, label: str) -> None:
    """Copy ``url`` (file:// or http(s)://) into ``dest``; raise Permanent or Transient."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise Permanent(f"file:// URL with a remote host {parts.netloc!r} is not supported")
        src = Path(unquote(parts.path))
        try:
            shutil.copyfile(src, dest)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise Permanent(f"no such file {src}") from None
        except PermissionError:
            raise Permanent(f"permission denied reading {src}") from None
        except OSError as exc:
            raise Transient(f"cannot read {src}: {exc.strerror or exc}") from None
        return
    if parts.scheme not in ("http", "https"):
        raise Permanent(f"unsupported URL scheme {parts.scheme!r} (use file://, http://, "
                         "https:// or a directory path)")
    req = urllib.request.Request(redact(url), headers={"User-Agent": f"litpipe/{__version__}"})
    if parts.username is not None:
        # user:password@ in a private mirror's URL means HTTP basic auth; the header is
        # not forwarded if the server redirects elsewhere.
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        req.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(cred.encode()).decode("ascii"))
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https only)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # it holds the error response's open connection
        kind = Permanent if _is_permanent_network_error(exc) else Transient
        raise kind(_describe(exc, timeout)) from None
    from tqdm import tqdm  # only when a download really happens

    try:
        with resp:
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.strip().isdigit() else None
            got = 0
            with dest.open("wb") as out, tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                    # None: tqdm's own "only on a terminal"; a log gets no bar.
                    disable=None if progress else True, file=sys.stderr, leave=False,
                    mininterval=0.5) as bar:
                while chunk := resp.read1(CHUNK):  # what has arrived; not 64 kB
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        raise Transient(_describe(exc, timeout)) from None
    if total is not None and got != total:
        raise Transient(f"truncated: got {got} of {total} bytes (Content-Length)")
