"""The study's MLflow parent run (litpipe.sweep.tracking): one per study, however many
workers start together. (Across machines, through PostgreSQL's advisory lock:
tests/e2e/test_sweep.py, which has the server.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from litpipe.sweep.spec import load_sweep
from tests.helpers.repo import ROOT
from tests.helpers.sweep import race_parent_runs


def test_workers_started_together_make_one_parent(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "sweep.yaml").write_text((ROOT / "sweep.yaml").read_text())
    sweep = load_sweep(tmp_path / "sweep.yaml")
    lock = tmp_path / ".litpipe/sweep.lock"  # SQLite: one machine, one lock file
    created, returned = race_parent_runs(sweep, f"sqlite:///{tmp_path / 'study.db'}",
                                         [lock, lock], tmp_path, monkeypatch)
    assert created == ["run0"]
    assert returned == ["run0", "run0"]
