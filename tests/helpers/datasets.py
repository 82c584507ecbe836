"""Dataset files in their real formats, as the mirrors serve them.

Gzipped IDX files named as on the MNIST mirrors, and CIFAR-10's python tarball
(``cifar-10-batches-py/`` with batches pickled the way Python 2 wrote the real ones: dicts
with byte-string keys).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as an IDX file of unsigned bytes (the MNIST family's format)."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def mnist_like(n: int = 12, seed: int = 0) -> dict[str, bytes]:
    """Gzipped IDX files named as on the real mirrors: n training, n // 2 test samples."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, count in (("train", n), ("t10k", n // 2)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(
            idx_bytes(rng.integers(0, 256, (count, 28, 28))), mtime=0)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(
            idx_bytes(rng.integers(0, 10, count)), mtime=0)
    return files


def sha256_digests(files: dict[str, bytes]) -> dict[str, str]:
    """``data.digests`` entries pinning the decompressed content of gzipped ``files``."""
    return {k: "sha256:" + hashlib.sha256(gzip.decompress(v)).hexdigest()
            for k, v in files.items()}


def md5_digests(files: dict[str, bytes]) -> dict[str, str]:
    """``data.digests`` entries pinning ``files`` as served (archive MD5)."""
    return {k: "md5:" + hashlib.md5(v).hexdigest() for k, v in files.items()}


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle protocol 2 writes it (SHORT_BINSTRING / BINSTRING)."""
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b
    return b"T" + struct.pack("<i", len(b)) + b


def _py2_int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])
    return b"J" + struct.pack("<i", i)


def py2_batch_pickle(data: np.ndarray, labels: list[int], *,
                     numpy_module: bytes = b"numpy.core.multiarray") -> bytes:
    """A CIFAR batch dict pickled byte for byte the way Python 2 + numpy 1 wrote it.

    Python 3 cannot produce this (it writes ``bytes`` via ``_codecs.encode``), and the real
    files are Python 2 pickles, so the reader is tested on the genuine opcode stream: byte
    strings as BINSTRING, the array via ``numpy.core.multiarray._reconstruct`` and a BUILD
    with the raw buffer.
    """
    assert data.dtype == np.uint8 and data.ndim == 2
    rows, cols = data.shape
    array = (
        b"c" + numpy_module + b"\n_reconstruct\n"
        + b"cnumpy\nndarray\n" + _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
        + b"(" + _py2_int(1) + b"M" + struct.pack("<H", rows) + b"M" + struct.pack("<H", cols)
        + b"\x86"
        + b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
        + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2
        + _py2_int(0) + b"tb"
        + b"\x89" + _py2_str(data.tobytes()) + b"tb"
    )
    label_list = b"](" + b"".join(_py2_int(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + _py2_str(b"batch_label") + _py2_str(b"testing batch 1 of 1")
            + _py2_str(b"data") + array + _py2_str(b"labels") + label_list + b"u.")


def cifar_members(n: int = 4, seed: int = 1) -> dict[str, bytes]:
    """The files of ``cifar-10-python.tar.gz``: five train batches, a test batch, meta."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        out[f"cifar-10-batches-py/{name}"] = py2_batch_pickle(
            rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            rng.integers(0, 10, n).tolist())
    names = b"(" + b"".join(_py2_str(c) for c in (b"airplane", b"automobile", b"bird", b"cat",
                                                   b"deer", b"dog", b"frog", b"horse",
                                                   b"ship", b"truck")) + b"l"
    out["cifar-10-batches-py/batches.meta"] = (
        b"\x80\x02}(" + _py2_str(b"label_names") + names + _py2_str(b"num_cases_per_batch")
        + _py2_int(n) + b"u.")
    return out


def cifar_tarball(members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None
                  ) -> bytes:
    """A gzipped tarball of ``members`` (name -> bytes), plus optional link members.

    ``links`` maps a member name to (``tarfile.SYMTYPE`` or ``LNKTYPE``, link target): the
    raw material of archives that try to write outside the extraction directory.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        dirs = sorted({str(Path(n).parent) for n in members if "/" in n and ".." not in n
                       and not n.startswith("/")})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, (kind, target) in (links or {}).items():  # before the files: they
            info = tarfile.TarInfo(name)                      # may be written through it
            info.type, info.linkname = kind, target
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def files_under(root: Path) -> list[str]:
    """Every file below ``root``, relative and sorted (directories are not listed)."""
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() or p.is_symlink())
