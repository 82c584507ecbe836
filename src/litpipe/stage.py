"""The one runner every ``stages/<name>.py`` uses: validate params, run, report.

A stage entry reads::

    with stage("train") as run:
        from litpipe.training.train import train   # heavy imports only after validation

        run.summary = train(run.params)

``params.yaml`` is validated on entering the block, before the stage imports torch,
lightning or mlflow, so a bad value costs a fraction of a second and touches nothing. On
leaving it, a :class:`~litpipe.errors.LitpipeError` (what users are expected to hit: a bad
param, an unreachable mirror or server, a missing input) becomes one paragraph on stderr and
exit status 2; Ctrl-C becomes exit status 130; anything else keeps its traceback, because it
is a bug.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litpipe.atomic import write_text
from litpipe.config import Params
from litpipe.errors import LitpipeError
from litpipe.params import load_params
from litpipe.repo import VALIDATED


@dataclass
class StageRun:
    """What the ``with`` block works with: the validated params, and a summary to print."""

    params: Params
    summary: Any = None


def fail(name: str, message: object, status: int) -> None:
    """Print ``litpipe NAME: error: MESSAGE`` to stderr and exit with ``status``."""
    print(f"litpipe {name}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


@contextmanager
def stage(name: str, params_path: str | Path = "params.yaml") -> Iterator[StageRun]:
    """Run the body as pipeline stage ``name``; exit the process with its status."""
    t0 = time.perf_counter()
    try:
        run = StageRun(load_params(params_path))
    except LitpipeError as exc:
        fail(name, exc, 2)
    try:
        yield run
    except LitpipeError as exc:
        fail(name, exc, 2)
    except KeyboardInterrupt:
        fail(name, "interrupted (Ctrl-C); nothing half-written was left, and a training run "
             "resumes from its last completed epoch on the next `dvc repro`", 130)
    done = f"litpipe {name}: done in {time.perf_counter() - t0:.1f}s"
    print(f"{done}: {run.summary}" if run.summary is not None else done)


def write_validated_marker(path: Path = VALIDATED) -> None:
    """The validate stage's output: constant text, so that a valid change of params does not
    by itself rerun the stages that depend on it (they depend on the params they read)."""
    write_text(path, "params.yaml passed validation; the values are in dvc.lock\n")
