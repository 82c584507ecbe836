"""Sweep workers racing for the study's MLflow parent run (litpipe.sweep.tracking)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from litpipe.sweep import study as studies
from litpipe.sweep import tracking
from litpipe.sweep.spec import Sweep


def race_parent_runs(sweep: Sweep, storage: str, lock_files: list[Path], tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """One thread per lock file calls ``parent_run`` on its own connection to ``storage``
    (two machines when the lock files differ); return (runs created, runs each returned).

    Creating a run waits (up to 2 s) for the other thread to create one too: without a
    lock both get there and two parents are made; with it the other thread waits for the
    lock, the wait times out and it finds the first one's parent.
    """
    meet = threading.Barrier(len(lock_files), timeout=2)
    created: list[str] = []

    class FakeRun:  # MLflow stays out: only how many parents are created matters
        def __init__(self, uri: str, run_id: str) -> None:
            self.run_id = run_id

        @classmethod
        def start(cls, uri: str, experiment: str, name: str, tags: dict) -> FakeRun:
            try:
                meet.wait()
            except threading.BrokenBarrierError:
                pass
            created.append(f"run{len(created)}")
            return cls(uri, created[-1])

        def log_values(self, values: dict) -> None:
            pass

        def log_artifact(self, path: Path, where: str) -> None:
            pass

    monkeypatch.setattr(tracking, "TrackedRun", FakeRun)
    studies.open_study(sweep, studies.open_storage(storage))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.touch()
    returned: list[str] = []

    def worker(lock_file: Path) -> None:
        study = studies.load_study(sweep, storage)  # its own storage, as on its own machine
        returned.append(tracking.parent_run(study, sweep, sweep_file, "unused", "litpipe",
                                            storage, lock_file).run_id)

    threads = [threading.Thread(target=worker, args=(f,)) for f in lock_files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return created, returned
