"""The download stage's library: fetch a dataset's raw files from mirrors, verify, install.

Why it is built this way:

* **Mirrors fail in every way a network can** (404, stalls, refused connections, bodies cut
  short, files that silently differ), so each file is tried on every mirror of
  ``data.mirrors`` in order, with a connect/read timeout and a bounded retry with backoff
  for failures that may be transient. Failures that a retry cannot fix (404, a wrong
  digest) move straight on to the next mirror. When every mirror fails, one
  :class:`DownloadError` names each mirror tried and why.
* **Nothing is used unverified.** The expected digest is the SHA-256 of the *decompressed*
  content where the registry knows it (independent of how a mirror compressed the file),
  else the MD5 of the archive as upstream publishes it; ``data.digests`` overrides either.
* **Atomic.** Downloads, decompression and tar extraction happen in the hidden
  ``<raw_root>/.partial/`` directory and are renamed into ``<raw_root>/<dataset>/`` only
  once complete and verified; ``MANIFEST.json`` is written last, so its presence means the
  set is complete. A killed run leaves debris only under ``.partial/``, which the next run
  deletes (never trusts) before starting.
* **Cheap reruns.** A file already in place is re-hashed and kept when it matches what the
  manifest (or the registry's content SHA-256) says, so a rerun fetches nothing.
* **Fast start.** Only the standard library, numpy (via the registry) and pydantic (via the
  config) are imported; torch, lightning and mlflow never are.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from litpipe import __version__
from litpipe.config import DataConfig
from litpipe.datasets import DatasetSpec, RawFile, get_spec

CHUNK = 1 << 16
BACKOFF_S = 0.5  # first pause before a retry; doubles per retry ...
BACKOFF_MAX_S = 4.0  # ... up to this cap, so a retry budget of 10 costs under 40 s
PARTIAL = ".partial"
MANIFEST = "MANIFEST.json"
_HEX_LEN = {"sha256": 64, "md5": 32}
# HTTP statuses worth retrying on the same mirror; every other 4xx is final for that mirror.
_RETRYABLE_HTTP = {408, 425, 429}


class DownloadError(Exception):
    """The dataset could not be fetched and verified; the message says what was tried."""


class _Permanent(Exception):
    """A failure that retrying the same mirror cannot fix (404, digest mismatch, no file)."""


class _Transient(Exception):
    """A failure that may go away on retry (timeout, truncated body, HTTP 5xx)."""


@dataclass(frozen=True)
class Expected:
    """The digest a file must match.

    ``sha256`` is over the decompressed content (a ``.gz`` is decompressed first; a file
    served already decompressed is hashed as is); ``md5`` is over the bytes as served.
    """

    algorithm: str
    value: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}"


def expected_digest(f: RawFile, overrides: dict[str, str]) -> Expected:
    """The digest ``f`` must match: ``data.digests[f.remote]`` if set, else the registry's.

    Raises :class:`DownloadError` for a malformed override or a file with no digest at all,
    because downloading something that cannot be verified is never the right default.
    """
    if f.remote in overrides:
        raw = overrides[f.remote].strip()
        algo, _, value = raw.partition(":")
        algo, value = algo.strip().lower(), value.strip().lower()
        if (algo not in _HEX_LEN or len(value) != _HEX_LEN[algo]
                or any(c not in "0123456789abcdef" for c in value)):
            raise DownloadError(
                f"data.digests[{f.remote!r}] = {raw!r} is not a digest: use 'sha256:<64 hex>' "
                "(SHA-256 of the decompressed content) or 'md5:<32 hex>' (MD5 of the archive "
                "as served)")
        return Expected(algo, value)
    if f.sha256:
        return Expected("sha256", f.sha256)
    if f.md5:
        return Expected("md5", f.md5)
    raise DownloadError(f"{f.remote}: the registry knows no digest for it, so it cannot be "
                        "verified; add one under data.digests in params.yaml")


# ------------------------------------------------------------------------------ mirrors

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


def _fetch(url: str, dest: Path, timeout: float, progress: bool, label: str) -> None:
    """Copy ``url`` (file:// or http(s)://) into ``dest``; raise _Permanent or _Transient."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _Permanent(f"file:// URL with a remote host {parts.netloc!r} is not supported")
        src = Path(unquote(parts.path))
        try:
            shutil.copyfile(src, dest)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise _Permanent(f"no such file {src}") from None
        except PermissionError:
            raise _Permanent(f"permission denied reading {src}") from None
        except OSError as exc:
            raise _Transient(f"cannot read {src}: {exc.strerror or exc}") from None
        return
    if parts.scheme not in ("http", "https"):
        raise _Permanent(f"unsupported URL scheme {parts.scheme!r} (use file://, http://, "
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
        kind = _Permanent if _is_permanent_network_error(exc) else _Transient
        raise kind(_describe(exc, timeout)) from None
    from tqdm import tqdm  # only when a download really happens

    try:
        with resp:
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.strip().isdigit() else None
            got = 0
            with dest.open("wb") as out, tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                    disable=not progress, file=sys.stderr, leave=False,
                    mininterval=0.5) as bar:
                while chunk := resp.read1(CHUNK):  # what has arrived; not 64 kB
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(_describe(exc, timeout)) from None
    if total is not None and got != total:
        raise _Transient(f"truncated: got {got} of {total} bytes (Content-Length)")


# ----------------------------------------------------------------------- verification

def _hash_file(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _content_to(archive: Path, out: Path | None) -> str:
    """SHA-256 of ``archive``'s content (gunzipped if gzip), optionally written to ``out``.

    One streaming pass does both, so a 50 MB file is never held in memory.
    """
    h = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(archive.open("rb"))
        src = stack.enter_context(gzip.GzipFile(fileobj=fh)) if _is_gzip(archive) else fh
        dst = stack.enter_context(out.open("wb")) if out is not None else None
        while True:
            try:
                chunk = src.read(CHUNK)
            except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                raise _Permanent(f"not a valid gzip archive ({exc})") from None
            if not chunk:
                break
            h.update(chunk)
            if dst is not None:
                dst.write(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> str:
    """SHA-256 over every file under ``root`` (sorted relative paths, sizes, contents).

    Lets a rerun verify an extracted tree against the manifest; any added, removed or
    changed file changes it.
    """
    h = hashlib.sha256()
    for p in sorted(root.rglob("*"), key=lambda q: q.relative_to(root).as_posix()):
        if p.is_symlink() or not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        h.update(f"{rel}\0{p.stat().st_size}\0".encode())
        h.update(bytes.fromhex(_hash_file(p)))
    return h.hexdigest()


def _local_digest(path: Path) -> str:
    return tree_digest(path) if path.is_dir() else _hash_file(path)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _is_archive(f: RawFile) -> bool:
    return f.remote.endswith((".tar.gz", ".tgz", ".tar"))


# --------------------------------------------------------------------------- tarballs

def _refuse(label: str, member: tarfile.TarInfo, why: str) -> DownloadError:
    return DownloadError(
        f"{label}: refusing archive member {member.name!r}: {why}. The archive matched "
        "its expected digest, so the digest itself (data.digests or the registry) points at "
        "an unsafe file; nothing was extracted")


def _escapes(path: str) -> bool:
    p = PurePosixPath(path)
    return p.is_absolute() or ".." in p.parts or path.startswith(("/", "\\"))


def check_members(label: str, members: list[tarfile.TarInfo]) -> None:
    """Refuse any member that could write outside the extraction directory.

    Absolute names, ``..`` components, links whose target leaves the tree, paths that go
    through a symlink in the archive, and device files are all refused, naming the member.
    ``tarfile``'s ``filter="data"`` checks the same at extraction time; this check comes
    first so that the message names the member and nothing at all is written.
    """
    symlinks: set[PurePosixPath] = set()
    for m in members:
        name = PurePosixPath(m.name)
        if _escapes(m.name):
            raise _refuse(label, m, "it would be written outside the target directory")
        through = [s for s in symlinks if s in name.parents]
        if through:
            raise _refuse(label, m, f"its path goes through the symlink '{through[0]}'")
        if m.issym():
            target = (name.parent / m.linkname).as_posix()
            if PurePosixPath(m.linkname).is_absolute() or os.path.normpath(
                    target).split("/")[0] == "..":
                raise _refuse(label, m, f"it is a symlink to {m.linkname!r}, outside the "
                                          "target directory")
            symlinks.add(name)
        elif m.islnk():
            if _escapes(m.linkname) or os.path.normpath(m.linkname).split("/")[0] == "..":
                raise _refuse(label, m, f"it is a hard link to {m.linkname!r}, outside the "
                                          "target directory")
        elif not (m.isfile() or m.isdir()):
            raise _refuse(label, m, "it is a device or FIFO, not a file or directory")


def safe_extract(archive: Path, dest: Path, label: str | None = None) -> None:
    """Extract ``archive`` into ``dest`` after :func:`check_members`, with filter="data".

    ``label`` names the archive in messages (default: its file name).
    """
    label = label or archive.name
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            check_members(label, members)
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as exc:
                member = getattr(exc, "tarinfo", None)
                name = member.name if member is not None else "?"
                raise DownloadError(f"{label}: refusing archive member {name!r}: "
                                    f"{exc}; nothing usable was extracted") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise _Permanent(f"not a valid tar archive ({exc})") from None


# --------------------------------------------------------------------------- installing

def _verify_and_install(tmp: Path, f: RawFile, expected: Expected, source: str,
                        dest: Path, partial: Path) -> str:
    """Check ``tmp`` against ``expected``; move its content into ``dest / f.local``.

    Decompressed content and extracted trees are produced under ``partial`` and renamed
    into place (same filesystem, so the rename is atomic). Returns the SHA-256 of what was
    installed (file content, or :func:`tree_digest` of a tree) for the manifest.
    """
    def mismatch(actual: str) -> _Permanent:
        return _Permanent(f"digest mismatch for {f.remote} from {source}: expected {expected}, "
                          f"got {expected.algorithm}:{actual}")

    if expected.algorithm == "md5":
        actual = _hash_file(tmp, "md5")
        if actual != expected.value:
            raise mismatch(actual)
    target = dest / f.local
    if _is_archive(f):
        if expected.algorithm == "sha256":
            actual = _content_to(tmp, None)
            if actual != expected.value:
                raise mismatch(actual)
        staging = Path(tempfile.mkdtemp(prefix=f"{f.local}.", suffix=".extract", dir=partial))
        safe_extract(tmp, staging, f"{f.remote} (from {source})")
        produced = staging / f.local
        if not produced.is_dir() or produced.is_symlink():
            raise DownloadError(f"{f.remote} (verified, from {source}) has no top-level "
                                f"{f.local}/ directory; the registry entry for it is wrong")
        dest.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            # Move the stale tree aside (inside .partial) so the rename below cannot fail.
            os.replace(target, staging / ".old")
        local = tree_digest(produced)
        os.replace(produced, target)
        shutil.rmtree(staging, ignore_errors=True)
        return local
    plain = Path(tempfile.mkstemp(prefix=f"{f.local}.", suffix=".content", dir=partial)[1])
    try:
        actual = _content_to(tmp, plain)
        if expected.algorithm == "sha256" and actual != expected.value:
            raise mismatch(actual)
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(plain, 0o644)  # mkstemp makes 0600; data files are not secrets
        os.replace(plain, target)
        return actual
    finally:
        plain.unlink(missing_ok=True)


def _fetch_file(f: RawFile, expected: Expected, mirrors: list[str], dest: Path,
                partial: Path, cfg: DataConfig, progress: bool) -> dict[str, Any]:
    """Install ``f`` from the first mirror that serves it verified; return its manifest entry."""
    tries: list[str] = []
    attempts = cfg.retries + 1
    for mirror in mirrors:
        url = file_url(mirror, f.remote)
        shown = redact(url)
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S))
            fd, name = tempfile.mkstemp(prefix=f"{f.remote}.", suffix=".download", dir=partial)
            os.close(fd)
            tmp = Path(name)
            try:
                _fetch(url, tmp, cfg.timeout, progress, f.remote)
                local = _verify_and_install(tmp, f, expected, shown, dest, partial)
            except _Permanent as exc:
                tries.append(f"{shown}: {exc}")
                break
            except _Transient as exc:
                tries.append(f"{shown} (attempt {attempt + 1}/{attempts}): {exc}")
                continue
            except OSError as exc:  # writing under raw_root failed: disk full, permissions
                raise DownloadError(f"cannot store {f.local} under {dest}: {exc}; nothing "
                                    "partial was left there") from None
            finally:
                tmp.unlink(missing_ok=True)
            print(f"download: {f.remote} verified ({expected}) from {shown}", file=sys.stderr)
            return _entry(f, expected, dest / f.local, local, redact(mirror))
    raise DownloadError(
        f"could not fetch {f.remote} for dataset {cfg.dataset!r} from any of its "
        f"{len(mirrors)} mirror(s); tried: " + "; ".join(tries) +
        f". Nothing partial was left in {dest}. Check data.mirrors.{cfg.dataset} (and "
        "data.timeout / data.retries) in params.yaml; if a mirror serves different but "
        "trusted files, set their digests under data.digests.")


def _entry(f: RawFile, expected: Expected, target: Path, local_sha256: str,
           mirror: str | None) -> dict[str, Any]:
    """The manifest entry of an installed file: a function of the data, plus its source.

    ``local_sha256`` is the hash of what lies on disk (content, or tree digest), so a
    rerun can re-verify even files whose expected digest is the MD5 of an archive that is
    no longer kept.
    """
    return {"local": f.local, "algorithm": expected.algorithm, "digest": expected.value,
            "local_sha256": local_sha256, "size": _size(target), "mirror": mirror}


def _reusable(f: RawFile, expected: Expected, dest: Path, old: dict[str, Any]
              ) -> dict[str, Any] | None:
    """The manifest entry for ``f`` if ``dest`` already holds it verified, else None.

    The local copy is always re-hashed: against the content hash the previous manifest
    recorded when it was installed (if that manifest verified it with today's expected
    digest), or directly against a content SHA-256 from the registry or ``data.digests``.
    """
    target = dest / f.local
    if not target.exists() or target.is_symlink():
        return None
    entry = old.get(f.remote)
    if (isinstance(entry, dict) and entry.get("local") == f.local
            and entry.get("algorithm") == expected.algorithm
            and entry.get("digest") == expected.value
            and isinstance(entry.get("local_sha256"), str)):
        if _local_digest(target) == entry["local_sha256"]:
            return {**_entry_shape(entry), "size": _size(target)}
        return None
    if expected.algorithm == "sha256" and target.is_file() and not _is_archive(f):
        if _hash_file(target) == expected.value:
            return _entry(f, expected, target, expected.value, None)
    return None


def _entry_shape(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("local", "algorithm", "digest", "local_sha256", "size", "mirror")
    return {k: entry.get(k) for k in keys}


# ---------------------------------------------------------------------------- manifest

def _read_manifest(path: Path) -> dict[str, Any]:
    """The previous manifest's file entries, or {} if absent or unreadable (then re-verify)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _write_manifest(dest: Path, partial: Path, manifest: dict[str, Any]) -> None:
    """Write ``MANIFEST.json`` via a temp file in ``partial``: it appears whole or not at all."""
    dest.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="MANIFEST.", suffix=".json", dir=partial)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)


def _bundled_manifest(spec: DatasetSpec) -> dict[str, Any]:
    """Manifest of a dataset shipped inside scikit-learn: what provides it, no files.

    The version comes from the package metadata: importing sklearn itself costs a second.
    """
    from importlib import metadata

    try:
        version = metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        raise DownloadError(f"dataset {spec.name!r} is bundled with scikit-learn, which is not "
                            "installed in this environment (pip install scikit-learn)") from None
    return {"dataset": spec.name, "files": {},
            "source": f"bundled with scikit-learn {version}; nothing to download",
            "sklearn_version": version}


@contextlib.contextmanager
def _exclusive(raw_root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``raw_root`` so two downloads never share ``.partial``.

    Uses ``flock`` on the directory itself (no lock file to leave behind); where that is
    unavailable (no fcntl, or a filesystem that refuses it) the download runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(raw_root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"download: waiting for another download into {raw_root}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


# ------------------------------------------------------------------------------- entry

def download_dataset(cfg: DataConfig, raw_root: Path, *, progress: bool = True) -> Path:
    """Make ``raw_root/<cfg.dataset>`` hold the dataset's verified raw files; return it.

    MNIST-family files are stored decompressed under their registry ``local`` names; the
    CIFAR-10 tarball is extracted to ``cifar-10-batches-py/``; ``digits`` (bundled with
    scikit-learn) gets only a manifest. Raises :class:`DownloadError` with a one-paragraph
    message on any failure, leaving nothing partial in the dataset directory.
    """
    spec = get_spec(cfg.dataset)
    raw_root = Path(raw_root)
    dest = raw_root / spec.name
    partial = raw_root / PARTIAL
    raw_root.mkdir(parents=True, exist_ok=True)
    with _exclusive(raw_root):
        # Debris of a killed run is never trusted; with the lock held, nobody else uses it.
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            if not spec.files:
                _write_manifest(dest, partial, _bundled_manifest(spec))
                return dest
            mirrors = cfg.mirrors.get(spec.name) or []
            expected = {f.remote: expected_digest(f, cfg.digests) for f in spec.files}
            old = _read_manifest(dest / MANIFEST)
            files: dict[str, Any] = {}
            for f in spec.files:
                entry = _reusable(f, expected[f.remote], dest, old)
                if entry is None:
                    if not mirrors:
                        raise DownloadError(
                            f"data.mirrors.{spec.name} is empty, and {f.remote} is not "
                            f"already in {dest}: list at least one mirror in params.yaml")
                    # From here on the old manifest no longer describes the directory.
                    (dest / MANIFEST).unlink(missing_ok=True)
                    entry = _fetch_file(f, expected[f.remote], mirrors, dest, partial, cfg,
                                        progress)
                files[f.remote] = entry
            _write_manifest(dest, partial, {"dataset": spec.name, "files": files})
            return dest
        finally:
            shutil.rmtree(partial, ignore_errors=True)
