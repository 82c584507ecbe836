"""Share this machine's CPU cores between the trainings running on it at the same time.

PyTorch starts one intra-op thread per core in every process. Two trainings at once (``dvc
queue start -j 2``, two terminals, a sweep's workers) then run twice as many busy threads as
there are cores; OpenMP threads spin while they wait for each other, and each step took
several times as long as alone. Every training therefore registers itself in a directory
shared by this user's processes and uses ``cores // trainings`` threads, at least one,
looking again about once a second, so a training that started alone gives cores up when
another starts and takes them back when it ends.

A registration is a file holding an exclusive ``flock``: the kernel drops the lock when the
process dies, however it dies (``kill -9`` included), so a dead training's file is
recognised as stale and removed by the next process that counts.

The thread count changes the last bits of a convolution's weight gradient (oneDNN splits the
batch between threads and adds the parts in that order), so a run that shared the cores can
differ in those bits from the same run alone; the run records the thread counts it used
(tags ``litpipe.cpu_cores``, ``litpipe.threads`` and the metric ``cpu_threads`` per epoch).
``OMP_NUM_THREADS`` set by the user wins: the count is then theirs and is never changed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import torch

from litpipe.locks import lock, try_lock

CHECK_EVERY_S = 1.0  # how often a training counts the others (a directory listing)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, as ``taskset`` or a container's
    cpuset leave it), not the machine's total."""
    return len(os.sched_getaffinity(0))


def registry_dir() -> Path:
    """The directory this user's trainings register in, shared by every checkout."""
    return Path(tempfile.gettempdir()) / f"litpipe-{os.getuid()}" / "trainings"


class CoreShare:
    """A registered training: enter to register, :meth:`apply` to (re)set the thread count.

    Used as ``with CoreShare() as share: ... share.apply()``; outside the block the process
    keeps the thread count it had before.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or registry_dir()
        self.cores = cpu_cores()
        self.fixed_by_user = "OMP_NUM_THREADS" in os.environ
        self.threads = torch.get_num_threads()
        self._before = self.threads
        self._file: int | None = None
        self._path: Path | None = None
        self._checked = 0.0

    def __enter__(self) -> CoreShare:
        if self.fixed_by_user:
            return self
        try:
            self._register()
        except OSError as e:
            # Sharing is an optimisation: a training must not fail because $TMPDIR is
            # read-only or full. It keeps every core, and says why in one line.
            if self._file is not None:
                os.close(self._file)
                self._file = None
            print(f"litpipe: cannot register in {self.directory} ({e.strerror or e}); this "
                  "training uses all cores, unshared (set TMPDIR to a writable directory)",
                  file=sys.stderr)
            return self
        self.apply(force=True)
        return self

    def _register(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Locked under a name the counters ignore, then renamed: a file that others can
        # see is always locked, so none of them takes it for a dead training's.
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = self.directory / f".{name}"
        self._file = lock(tmp)
        path = self.directory / f"{name}.training"
        try:
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # not left behind for every later count to skip
            raise
        self._path = path

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._file is not None:
            assert self._path is not None
            self._path.unlink(missing_ok=True)
            os.close(self._file)  # releases the lock
            self._file = None
            torch.set_num_threads(self._before)

    def trainings(self) -> int:
        """How many trainings are registered and alive (this one included); removes the
        files of dead ones."""
        alive = 0
        # A hidden file is a registration half made; one nobody holds belongs to a process
        # that died (or failed) before renaming it, and is removed like a dead training's.
        for path in [*self.directory.glob("*.training"), *self.directory.glob(".*")]:
            try:
                fd = try_lock(path, shared=True, create=False)
            except (FileNotFoundError, IsADirectoryError):  # gone meanwhile: it just ended
                continue
            if fd is None:
                alive += path.suffix == ".training"  # held: its owner lives (or is us)
            else:
                path.unlink(missing_ok=True)  # nobody holds it: its process is gone
                os.close(fd)
        return max(alive, 1)

    def apply(self, force: bool = False) -> int:
        """Set this process's thread count to its share of the cores; return it.

        Counts at most once every ``CHECK_EVERY_S`` unless ``force``: cheap enough to call on
        every training step.
        """
        if self._file is None:
            return self.threads
        now = time.monotonic()
        if not force and now - self._checked < CHECK_EVERY_S:
            return self.threads
        self._checked = now
        share = max(1, self.cores // self.trainings())
        if share != self.threads:
            torch.set_num_threads(share)
            self.threads = share
        return share
