"""The download stage: fetch a dataset's raw files from mirrors, verify, store atomically.

Each file is tried on every mirror in order (``file://``, ``http(s)://`` or a directory
path), with a connect/read timeout and a bounded retry with backoff per mirror. A file is
checked against its digest *before* it is used: SHA-256 of the decompressed content where
known (independent of how a mirror compressed it), else the upstream MD5 of the archive.
It lands under ``data/raw/<dataset>/`` only complete and verified: downloads go to a hidden
``.partial`` directory and are renamed into place. This module never imports torch.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from litpipe.atomic import atomic_dir, write_json
from litpipe.config import DataConfig
from litpipe.datasets import DatasetSpec, RawFile, get_spec

CHUNK = 1 << 16
BACKOFF_S = 0.5
BACKOFF_MAX_S = 4.0
PARTIAL = ".partial"


class DownloadError(RuntimeError):
    """A file could not be fetched and verified from any mirror; the message lists each try."""


class _Permanent(Exception):
    """A failure that retrying the same mirror cannot fix (404, digest mismatch, bad path)."""


@dataclass(frozen=True)
class Expected:
    """The digest a file must match: ``sha256`` of decompressed content or ``md5`` of bytes."""

    algorithm: str
    value: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}"


def expected_digest(f: RawFile, overrides: dict[str, str]) -> Expected:
    """The registry's digest for ``f``, unless ``data.digests`` overrides it."""
    if f.remote in overrides:
        algo, _, value = overrides[f.remote].partition(":")
        if algo not in ("sha256", "md5") or not value:
            raise DownloadError(f"data.digests[{f.remote!r}] = {overrides[f.remote]!r}: use "
                                "'sha256:<hex>' (decompressed content) or 'md5:<hex>' (archive)")
        return Expected(algo, value.lower())
    if f.sha256:
        return Expected("sha256", f.sha256)
    if f.md5:
        return Expected("md5", f.md5)
    raise DownloadError(f"{f.remote}: no digest known; add one under data.digests")


def _file_url(mirror: str, name: str) -> str:
    if "://" not in mirror:  # a plain directory path
        return Path(mirror, name).resolve().as_uri()
    return mirror.rstrip("/") + "/" + name


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, socket.timeout | TimeoutError):
            return "timed out"
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        return str(reason)
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


def _fetch(url: str, dest: Path, timeout: float, progress: bool, label: str) -> None:
    """Stream ``url`` into ``dest``; raise on HTTP errors, timeouts and short bodies."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        src = Path(unquote(parsed.path))
        if not src.is_file():
            raise _Permanent(f"no such file {src}")
        shutil.copyfile(src, dest)
        return
    if parsed.scheme not in ("http", "https"):
        raise _Permanent(f"unsupported URL scheme {parsed.scheme!r}")
    from tqdm import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "litpipe"})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https only)
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500:
            raise _Permanent(_describe(exc)) from None
        raise
    with resp:
        total = resp.headers.get("Content-Length")
        total_n = int(total) if total and total.isdigit() else None
        got = 0
        with dest.open("wb") as out, tqdm(total=total_n, unit="B", unit_scale=True,
                                          desc=label, disable=not progress,
                                          file=sys.stderr, leave=False) as bar:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if total_n is not None and got != total_n:
        raise OSError(f"truncated: got {got} of {total_n} bytes")


def _digest_of(path: Path, expected: Expected) -> str:
    """Digest of ``path`` as ``expected`` defines it (decompressing gzip for sha256)."""
    h = hashlib.new(expected.algorithm)
    with path.open("rb") as fh:
        gz = expected.algorithm == "sha256" and fh.read(2) == b"\x1f\x8b"
        fh.seek(0)
        src = gzip.GzipFile(fileobj=fh) if gz else fh
        try:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                h.update(chunk)
        except (OSError, EOFError) as exc:
            raise _Permanent(f"corrupt archive ({exc})") from None
    return h.hexdigest()


def _install(tmp: Path, f: RawFile, dest_dir: Path, partial: Path) -> None:
    """Decompress/extract a verified download into ``dest_dir`` atomically."""
    target = dest_dir / f.local
    if f.remote.endswith(".tar.gz") or f.remote.endswith(".tgz"):
        staging = partial / (f.local + ".extract")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        safe_extract(tmp, staging)
        produced = staging / f.local
        if not produced.is_dir():
            raise _Permanent(f"archive has no top-level {f.local}/ directory")
        with atomic_dir(target) as out:
            for child in produced.iterdir():
                os.replace(child, out / child.name)
        shutil.rmtree(staging, ignore_errors=True)
        return
    if f.remote.endswith(".gz") and not f.local.endswith(".gz"):
        plain = partial / (f.local + ".plain")
        with gzip.open(tmp, "rb") as src, plain.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        os.replace(plain, target)
        return
    os.replace(tmp, target)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tarball, refusing any member that would land outside ``dest``.

    ``filter="data"`` already rejects absolute paths, ``..`` and links out of the tree; the
    explicit check first gives a message that names the offending member.
    """
    root = dest.resolve()
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            resolved = (root / member.name).resolve()
            if name.is_absolute() or ".." in name.parts or not resolved.is_relative_to(root):
                raise DownloadError(f"{archive.name}: refusing archive member {member.name!r}: "
                                    f"it would be written outside {dest}")
            if (member.issym() or member.islnk()) and not (
                    (resolved.parent / member.linkname).resolve().is_relative_to(root)):
                raise DownloadError(f"{archive.name}: refusing link {member.name!r} -> "
                                    f"{member.linkname!r}: it points outside {dest}")
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise DownloadError(f"{archive.name}: refusing archive member: {exc}") from None


def _is_current(f: RawFile, expected: Expected, dest_dir: Path, manifest: dict) -> bool:
    """True when ``dest_dir`` already holds ``f`` verified with the same digest.

    A decompressed file is re-hashed when its digest is a content SHA-256 (cheap and exact);
    an extracted tree or an MD5-checked archive is trusted from the manifest written after
    its verification (the manifest is written last, so it never describes a partial tree).
    """
    entry = manifest.get("files", {}).get(f.remote)
    target = dest_dir / f.local
    if not entry or entry.get("digest") != str(expected) or not target.exists():
        return False
    if expected.algorithm == "sha256" and target.is_file():
        return _digest_of(target, expected) == expected.value
    return True


def fetch_file(f: RawFile, expected: Expected, mirrors: list[str], dest_dir: Path,
               cfg: DataConfig, progress: bool) -> dict[str, object]:
    """Fetch one file from the first mirror that serves it verified; install it."""
    partial = dest_dir.parent / PARTIAL
    partial.mkdir(parents=True, exist_ok=True)
    tmp = partial / f"{dest_dir.name}.{f.remote}.download"
    tries: list[str] = []
    for mirror in mirrors:
        url = _file_url(mirror, f.remote)
        for attempt in range(cfg.retries + 1):
            if attempt:
                time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S))
            try:
                _fetch(url, tmp, cfg.timeout, progress, f.remote)
                actual = _digest_of(tmp, expected)
                if actual != expected.value:
                    raise _Permanent(f"digest mismatch for {f.remote}: expected "
                                     f"{expected}, got {expected.algorithm}:{actual}")
                _install(tmp, f, dest_dir, partial)
                print(f"download: {f.remote} verified ({expected}) from {mirror}",
                      file=sys.stderr)
                # No mirror in the manifest: data/raw stays content-addressed, so the same
                # files from another mirror do not make DVC rerun the split.
                return {"local": f.local, "digest": str(expected),
                        "size": _size(dest_dir / f.local)}
            except _Permanent as exc:
                tries.append(f"{url}: {exc}")
                break
            except DownloadError:
                raise
            except (OSError, urllib.error.URLError, TimeoutError, EOFError) as exc:
                tries.append(f"{url} (attempt {attempt + 1}/{cfg.retries + 1}): "
                             f"{_describe(exc)}")
            finally:
                tmp.unlink(missing_ok=True)
    raise DownloadError(
        f"could not fetch {f.remote} for dataset {cfg.dataset!r} from any of "
        f"{len(mirrors)} mirror(s); tried: " + "; ".join(tries) +
        ". Nothing partial was left under data/raw. Check data.mirrors (and "
        "data.timeout/retries) in params.yaml, or install Debian's dataset package.")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def download_dataset(cfg: DataConfig, raw_root: Path, *, progress: bool = True) -> Path:
    """Make ``raw_root/<dataset>`` hold the dataset's verified raw files; return that dir."""
    spec: DatasetSpec = get_spec(cfg.dataset)
    dest = raw_root / spec.name
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / "MANIFEST.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest: dict[str, object] = {"dataset": spec.name, "files": {}}
    if not spec.files:
        import sklearn

        manifest["source"] = f"bundled with scikit-learn {sklearn.__version__}"
    mirrors = cfg.mirrors.get(spec.name, [])
    if spec.files and not mirrors:
        raise DownloadError(f"data.mirrors.{spec.name} is empty: list at least one mirror")
    files: dict[str, object] = {}
    for f in spec.files:
        expected = expected_digest(f, cfg.digests)
        if _is_current(f, expected, dest, old):
            files[f.remote] = old["files"][f.remote]
            continue
        # The manifest no longer vouches for what is about to change.
        manifest_path.unlink(missing_ok=True)
        files[f.remote] = fetch_file(f, expected, mirrors, dest, cfg, progress)
    manifest["files"] = files
    write_json(manifest_path, manifest)
    shutil.rmtree(raw_root / PARTIAL, ignore_errors=True)
    return dest
