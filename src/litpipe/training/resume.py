"""Where a training run keeps what a crash must not lose, and how it finds it again.

Each training configuration gets a resume directory, ``<repo root>/.litpipe/resume/<id>/``,
outside DVC's outputs and ignored by git and DVC. The id is a fingerprint of everything the
train stage's result depends on (:func:`fingerprint`): the params it reads, the processed
data, litpipe's code, the torch and Lightning versions and the tracking URI. The directory
holds Lightning's checkpoints of the last completed epoch (``checkpoints/last.ckpt``) and
of the best one, the MLflow run id, the finder results, queued MLflow writes (``outbox.jsonl``) and,
once training is done, ``finished.json``.

Every file here is written under a temporary name and renamed, with its SHA-256 recorded
beside it (``<name>.sha256``) before the rename; what a resume reads is checked against
those digests first. A damaged checkpoint (a disk error, a truncation) is skipped for the
newest intact one, with one line saying so; when none is intact, or the run file is
damaged, training starts over in a new MLflow run and the old run, found by its resume
fingerprint tag, is closed as FAILED: never a traceback, never a run that holds only part
of the epochs.

``dvc repro`` after a kill finds the directory of the same fingerprint and continues from
its last epoch into the same MLflow run; after a failure *after* training (tracking outage,
full disk) it does not train at all. Directories of other fingerprints are stale: their runs
are closed as KILLED and the directories removed, never loaded. A directory in use is
locked (``flock``, released by the kernel even on ``kill -9``), so parallel experiments
never remove each other's state.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from litpipe.atomic import atomic_path
from litpipe.errors import LitpipeError
from litpipe.formats import json_text
from litpipe.locks import locked, try_lock
from litpipe.repo import find_repo_root
from litpipe.schema import Params

RESUME_ROOT = Path(".litpipe/resume")
# The params the train stage reads: dvc.yaml's train.params (tests/training/test_resume.py checks).
TRAIN_PARAMS = ("seed", "data.batch_size", "data.num_workers", "data.augment",
                "data.max_shift", "model",
                "optimizer", "scheduler", "trainer", "callbacks", "tuner", "tracking")


class ResumeError(LitpipeError):
    """The resume directory is in use by another training run, or unusable."""


def _dotted(tree: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def fingerprint(params: Params, tracking_uri: str, stats_json: Path) -> str:
    """A short id of everything a training run's result depends on."""
    import litpipe

    h = hashlib.sha256()
    dumped = params.model_dump(mode="json")
    for key in TRAIN_PARAMS:
        h.update(json.dumps([key, _dotted(dumped, key)], sort_keys=True).encode())
    h.update(tracking_uri.encode())
    h.update(stats_json.read_bytes())  # shapes, classes and content hashes of every split
    package = Path(litpipe.__file__).parent
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    h.update(f"torch {torch.__version__} lightning {lightning.__version__}".encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _root_lock(root: Path) -> Iterator[None]:
    """Serialises creating, locking and removing resume directories under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / ".lock"):
        yield


class ResumeDir:
    """One training configuration's resume state (see the module docstring)."""

    def __init__(self, path: Path, lock_fd: int | None = None) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.checkpoints = path / "checkpoints"  # ModelCheckpoint's best.ckpt and last.ckpt
        self.last = self.checkpoints / "last.ckpt"  # the end of the last completed epoch
        self.final = path / "final.ckpt"  # the model as training left it
        self.outbox = path / "outbox.jsonl"

    @classmethod
    def open(cls, fp: str, root: Path | None = None, wait_s: float = 0.0) -> ResumeDir:
        """Lock (creating if needed) the directory of ``fp``; remove stale ones first.

        ``wait_s``: how long to wait for a holder to let go. A sweep's retry of a dead
        worker's trial waits, because that trial's orphaned training stops at its next batch
        (sweep/trial.py) and leaves its checkpoints to resume from; anyone else fails at once.
        """
        root = root or find_repo_root() / RESUME_ROOT
        deadline = time.monotonic() + wait_s
        while True:
            with _root_lock(root):
                for other in sorted(p for p in root.iterdir()
                                    if p.is_dir() and p.name != fp):
                    _remove_stale(other)
                path = root / fp
                path.mkdir(exist_ok=True)
                fd = try_lock(path / "lock")
            if fd is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if fd is None:
            raise ResumeError(f"another training run with the same params and data is using "
                              f"{path} (see the lock file there); wait for it to finish")
        return cls(path, fd)

    @classmethod
    def peek(cls, fp: str, root: Path | None = None) -> ResumeDir:
        """The directory of ``fp`` without locking it: for the non-zero ranks of a DDP run,
        whose rank 0 holds the lock."""
        return cls((root or find_repo_root() / RESUME_ROOT) / fp)

    def checkpoint_to_resume(self) -> Path | None:
        """The newest intact checkpoint of an interrupted training (``last.ckpt``, else
        ``best.ckpt``), or None. Damaged ones are named on stderr and never loaded."""
        for ckpt in (self.last, self.checkpoints / "best.ckpt"):
            if not ckpt.is_file():
                continue
            if intact(ckpt):
                return ckpt
            print(f"litpipe train: {ckpt} is damaged (its SHA-256 is not the one recorded "
                  "when it was written); not resuming from it", file=sys.stderr)
        return None

    def damaged(self) -> str | None:
        """What makes this directory unusable for a resume, or None: a run file or a
        checkpoint that exists but fails its digest, with no intact checkpoint left."""
        run = self.path / "run.json"
        if run.exists() and (not intact(run) or self.run_info() is None):
            return f"{run} is damaged"
        ckpts = [c for c in (self.last, self.checkpoints / "best.ckpt") if c.is_file()]
        if ckpts and not any(intact(c) for c in ckpts):
            return f"no intact checkpoint in {self.checkpoints}"
        return None

    def reset(self) -> None:
        """Forget everything but the lock: training starts over here."""
        for child in self.path.iterdir():
            if child.name == "lock":
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        if not intact(path):
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def run_info(self) -> dict[str, Any] | None:
        """``{"tracking_uri", "run_id"}`` of the MLflow run this training logs to."""
        return self._read("run.json")

    def save_run_info(self, uri: str, run_id: str) -> None:
        write_verified(self.path / "run.json", json_text(
            {"tracking_uri": uri, "run_id": run_id, "pid": os.getpid()}).encode())

    def tuning(self) -> dict[str, Any] | None:
        """What the lr / batch-size finders chose, so a resumed run does not search again."""
        return self._read("tuning.json")

    def save_tuning(self, tuning: dict[str, Any]) -> None:
        write_verified(self.path / "tuning.json", json_text(tuning).encode())

    def finished(self) -> dict[str, Any] | None:
        """The facts of a training that completed (only its outputs remain to be written)."""
        return self._read("finished.json")

    def save_finished(self, facts: dict[str, Any]) -> None:
        write_verified(self.path / "finished.json", json_text(facts).encode())

    def remove(self) -> None:
        """Delete the directory (its training is complete and its outputs written)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_verified(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically, its SHA-256 recorded beside it first.

    The digest file keeps the digests of the file's last two versions: a kill between
    recording the new one and the rename leaves the old file, still verified.
    """
    digest = hashlib.sha256(data).hexdigest()
    record = _digest_file(path)
    try:
        previous = record.read_text().split()[-1:]
    except OSError:
        previous = []
    with atomic_path(record) as tmp:
        tmp.write_text(" ".join([*previous, digest]) + "\n")
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fh.write(data)


def _serialised(checkpoint: dict[str, Any]) -> memoryview:
    """A checkpoint's bytes, serialised in memory as Lightning's own writer does (and so
    that a full disk fails as a plain write's OSError, see :func:`export_checkpoint`)."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getbuffer()


def intact(path: Path) -> bool:
    """Whether ``path`` holds one of the versions :func:`write_verified` recorded."""
    try:
        known = _digest_file(path).read_text().split()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return False
    return digest in known


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through :func:`write_verified`: the resume directory's
    checkpoints are renamed into place whole and can be checked before a resume loads them.
    The bytes are those of Lightning's own writer (``torch.save`` into memory)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_verified(Path(path), _serialised(checkpoint))


def _remove_stale(path: Path) -> None:
    """Close the MLflow run of a stale, unlocked resume directory as KILLED; delete it."""
    fd = try_lock(path / "lock") if path.is_dir() else None
    if fd is None:
        return  # in use by a live training run (or already gone)
    try:
        info = ResumeDir(path).run_info()
        if info is not None:
            _close_abandoned_run(info, path / "outbox.jsonl")
        shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)


def _close_abandoned_run(info: dict[str, Any], outbox: Path) -> None:
    """Best effort: send what the dead run queued, then mark it KILLED if still RUNNING."""
    from litpipe.tracking.run import TrackedRun

    try:
        run = TrackedRun(info["tracking_uri"], info["run_id"], outbox=outbox)
        run.flush()
        if run.status() == "RUNNING":
            run.set_status("KILLED")
            run.flush()
            print(f"litpipe train: closed MLflow run {info['run_id']} as KILLED (its training "
                  "was interrupted and its params or code have changed since)",
                  file=sys.stderr)
    except Exception as exc:  # a stale run must never stop a new training
        print(f"litpipe train: could not close stale MLflow run {info.get('run_id')}: "
              f"{exc}", file=sys.stderr)


def _canonical(obj: Any) -> Any:
    """``obj`` rebuilt with every string interned.

    Pickle writes a repeated *object* once and refers back to it, so the bytes depend on
    which equal strings happen to be the same object: a resumed run (whose history came out
    of a checkpoint) and an uninterrupted one hold the same values with different sharing.
    Interning makes equal strings one object in both, hence the same bytes.
    """
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_canonical(v) for v in obj)
    return obj


def export_checkpoint(src: Path, dst: Path) -> None:
    """Copy a Lightning checkpoint to ``dst`` (atomically) without machine-specific paths.

    ModelCheckpoint's state names the files it wrote by absolute path (here, inside the
    resume directory); leaving those in ``models/*.ckpt`` would make the same training give
    different bytes in another clone or workspace, and would point at files that are gone.
    The result is the same bytes for the same training, resumed or not (:func:`_canonical`).
    """
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and isinstance(state, dict):
            for name in list(state):
                if name == "dirpath":
                    state[name] = ""
                elif name.endswith("_path") and state[name]:
                    state[name] = Path(state[name]).name
                elif name == "best_k_models":
                    state[name] = {Path(k).name: v for k, v in state[name].items()}
    ckpt = _canonical(ckpt)
    # Serialised in memory first, then written: a full disk then fails as the OSError
    # (ENOSPC) of a plain write, which the train stage turns into one line. torch.save
    # straight into the file masks it with a RuntimeError from its zip writer's cleanup.
    # (A buffer, not a path, also because torch names the archive's inner folder after
    # the file, and the temporary name is random.)
    data = _serialised(ckpt)
    with atomic_path(dst) as tmp, tmp.open("wb") as fh:
        fh.write(data)
