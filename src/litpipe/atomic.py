"""Atomic file and directory writes.

A stage that is killed half-way must not leave an output that looks complete. Everything a
stage writes goes to a temporary name in the same directory (same filesystem, so the final
``os.replace`` is atomic) and is renamed into place only once it is whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from litpipe.formats import json_text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _name_output(exc, path.parent / f".{path.name}.", path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; match what open() makes
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        _name_output(exc, tmp_path, path)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _name_output(exc: OSError, tmp: Path, path: Path) -> None:
    """Make a disk error (full, read-only) name the output being written, not the temporary
    name it was written under or nothing (numpy's and torch's writers give no file name)."""
    if exc.filename is None or str(exc.filename).startswith(str(tmp)):
        exc.filename = str(path)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as stable JSON (:func:`litpipe.formats.json_text`), atomically."""
    write_text(path, json_text(obj))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory; swap it in for ``path`` on success.

    The old directory is renamed aside, the new one renamed in, then the old one removed,
    so at every instant ``path`` is either the complete old or the complete new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like mkdir's
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old",
                                        dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        _name_output(exc, tmp, path)
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
