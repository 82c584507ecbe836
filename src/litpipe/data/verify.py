"""What a downloaded file must match, and the hashes that check it.

Nothing is used unverified. The expected digest is the SHA-256 of the *decompressed*
content where the registry knows it (so it does not depend on how a mirror compressed the
file), else the MD5 of the archive as upstream publishes it; ``data.digests`` overrides
either. Hashing streams in chunks: a 50 MB file is never held in memory.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

from litpipe.data.mirrors import CHUNK, DownloadError, Permanent
from litpipe.data.datasets import RawFile

_HEX_LEN = {"sha256": 64, "md5": 32}


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



def hash_file(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def content_to(archive: Path, out: Path | None) -> str:
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
                raise Permanent(f"not a valid gzip archive ({exc})") from None
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
        h.update(bytes.fromhex(hash_file(p)))
    return h.hexdigest()


def local_digest(path: Path) -> str:
    return tree_digest(path) if path.is_dir() else hash_file(path)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def is_archive(f: RawFile) -> bool:
    return f.remote.endswith((".tar.gz", ".tgz", ".tar"))
