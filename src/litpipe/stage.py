"""The one runner every ``stages/<name>.py`` uses: validate params, run, report.

A stage entry reads::

    with stage("train") as run:
        from litpipe.training.train import train   # heavy imports only after validation

        run.summary = train(run.params)

``params.yaml`` is validated on entering the block, before the stage imports torch,
lightning or mlflow, so a bad value costs a fraction of a second and touches nothing. On
leaving it:

* a :class:`~litpipe.errors.LitpipeError` (what users are expected to hit: a bad param, an
  unreachable mirror or server, a missing input) becomes one paragraph on stderr and exit
  status 2;
* a file error of the disk (full, read-only, no permission) becomes one line naming the
  file, exit status 2;
* SIGINT (Ctrl-C) or SIGTERM (what SLURM, Kubernetes and ``kill`` send) stops the stage the
  same way, named, with exit status 128 + the signal's number (130, 143);
* if ``params.yaml`` changed while the stage ran, the stage fails (exit 2) instead of
  succeeding: DVC reads the file again when it records a finished stage, and would record
  values that were not the ones used;
* anything else keeps its traceback, because it is a bug.

What the stage prints is for a person reading a log: third-party lines that tell them
nothing true and useful, and that litpipe cannot stop at their cause, are dropped here, each
by its exact message (:func:`quiet_third_party`); errors, other warnings and litpipe's own
lines all show.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litpipe.atomic import write_text
from litpipe.errors import LitpipeError
from litpipe.params import load_params
from litpipe.repo import VALIDATED
from litpipe.schema import Params


@dataclass
class StageRun:
    """What the ``with`` block works with: the validated params, and a summary to print.

    ``started`` is the stage's ``time.perf_counter()`` on entering the runner: the train,
    evaluate and export stages log their wall time from it into their MLflow run.
    """

    params: Params
    summary: Any = None
    started: float = 0.0


def fail(name: str, message: object, status: int) -> None:
    """Print ``litpipe NAME: error: MESSAGE`` to stderr and exit with ``status``."""
    print(f"litpipe {name}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


# A disk's refusals: one line naming the file, not a traceback.
DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
_received: list[int] = []  # the signals that stopped this process


def _stop(signum: int, frame: object) -> None:
    """SIGTERM and SIGINT both stop a stage as Ctrl-C does (Lightning saves nothing half
    written and the next run resumes); which one it was is remembered for the message."""
    _received.append(signum)
    raise KeyboardInterrupt


# Third-party warnings dropped by message, category and the module they are attributed to.
# Each has no cause in litpipe's code to fix, and tells the user nothing they can act on.
DROPPED_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # torch deprecated LeafSpec; Lightning 2.6's own pytree helper still builds one (per run).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\."),
    # MLflow's signature inference: integer columns cannot hold missing values. The only one
    # is the served model's output `class_index`, which no request ever sends.
    (r"Hint: Inferred schema contains integer column", UserWarning, r"mlflow\."),
)
# Third-party log lines dropped by message (a regex, searched), per logger.
_LIGHTNING_CHATTER = (
    r"Tip: For seamless cloud logging",  # an advertisement, printed by every Trainer
    # What the machine lacks; a GPU that is there but unused gets its own warning, kept.
    r"^(GPU|TPU) available: False",
    r"^Loading `train_dataloader` to estimate number of stepping batches",  # OneCycle's count
)
DROPPED_LOGS: dict[str, tuple[str, ...]] = {
    # rank_zero_info goes through one of these two, whichever Lightning package set it last.
    "lightning.pytorch.utilities.rank_zero": _LIGHTNING_CHATTER,
    "lightning.fabric.utilities.rank_zero": _LIGHTNING_CHATTER,
    # log_model checks the input example it was given; a mismatch is still a warning.
    "mlflow.pyfunc": (r"^Validating input example against model signature$",),
}
# Loggers whose INFO lines only repeat params.yaml ("Seed set to 42"); warnings still show.
QUIET_LOGGERS = ("lightning.fabric.utilities.seed",)


class _DropMessages(logging.Filter):
    """Drops the records of one logger whose message matches one of some patterns."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_third_party() -> None:
    """Drop the third-party lines listed above from this process's output (idempotent).

    Set before the stage imports Lightning or MLflow: their loggers are the same objects
    then, and their warnings are filtered when first raised. MLflow's artifact download
    bars ("Downloading artifacts: 100%", twice per export, for files on a local disk) are
    MLflow's own switch, left to the user if they set it.
    """
    for message, category, module in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, patterns in DROPPED_LOGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(patterns))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@contextmanager
def stage(name: str, params_path: str | Path = "params.yaml") -> Iterator[StageRun]:
    """Run the body as pipeline stage ``name``; exit the process with its status."""
    t0 = time.perf_counter()
    quiet_third_party()
    params_path = Path(params_path)
    before = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield from _run(name, params_path, t0)
    finally:  # a caller in the same process (a test, a notebook) gets its handlers back
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _run(name: str, params_path: Path, t0: float) -> Iterator[StageRun]:
    read = _digest(params_path)
    try:
        run = StageRun(load_params(params_path), started=t0)
    except LitpipeError as exc:
        fail(name, exc, 2)
    try:
        yield run
    except LitpipeError as exc:
        fail(name, exc, 2)
    except KeyboardInterrupt:
        signum = _received[-1] if _received else signal.SIGINT
        how = "SIGTERM" if signum == signal.SIGTERM else "SIGINT (Ctrl-C)"
        fail(name, f"stopped by {how}; nothing half-written was left, and a training run "
             "resumes from its last completed epoch on the next `dvc repro`", 128 + signum)
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = exc.filename or "a file"
        fail(name, f"cannot write {where}: {DISK_ERRORS[exc.errno]}; free space or fix the "
             "permissions, then run `dvc repro` again", 2)
    if _digest(params_path) != read:
        fail(name, f"{params_path} changed while the stage ran, so its outputs may not match "
             "the file DVC would record; nothing was recorded: run `dvc repro` again", 2)
    done = f"litpipe {name}: done in {time.perf_counter() - t0:.1f}s"
    print(f"{done}: {run.summary}" if run.summary is not None else done)


def write_validated_marker(path: Path = VALIDATED) -> None:
    """The validate stage's output: constant text, so that a valid change of params does not
    by itself rerun the stages that depend on it (they depend on the params they read)."""
    write_text(path, "params.yaml passed validation; the values are in dvc.lock\n")
