"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.repo import make_repo_copy


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A throw-away repository to run ``dvc repro`` in."""
    return make_repo_copy(tmp_path / "repo")


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``subprocess.Popen`` for a test's background pipeline, its own process group killed
    when the test ends: a test that fails while a training is held at an epoch would
    otherwise leave it waiting forever, registered in the core registry, and every later
    training would run on fewer threads (other bits) than the references it is compared
    with."""
    procs: list[subprocess.Popen[str]] = []

    def start(cmd: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
