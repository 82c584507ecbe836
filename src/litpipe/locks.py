"""The one file lock litpipe uses: ``flock`` on a file or directory.

The kernel drops an ``flock`` when its process dies, however it dies (``kill -9``
included), so a lock can never outlive its holder: a file nobody holds belongs to a dead
process. Every lock in the package comes from here: the resume directories
(training/resume.py), the SQLite store's schema set-up (tracking/store.py), the core
registry (cores.py) and the download directory (data/download.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def _open(path: Path, create: bool) -> int:
    """An fd to lock: a directory is opened read-only (no lock file to leave behind)."""
    if path.is_dir() or not create:
        return os.open(path, os.O_RDONLY)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def try_lock(path: Path, shared: bool = False, create: bool = True) -> int | None:
    """An fd holding a lock on ``path`` (exclusive, or ``shared``), or None when another
    process holds a conflicting one. Close the fd to release it. ``create=False``: a path
    that does not exist (removed meanwhile) raises FileNotFoundError."""
    fd = _open(path, create)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock(path: Path) -> int:
    """An fd holding an exclusive lock on ``path`` (a file, created if needed, or an
    existing directory), waiting for any other holder. Close the fd to release it."""
    fd = _open(path, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block (see :func:`lock`)."""
    fd = lock(path)
    try:
        yield
    finally:
        os.close(fd)
