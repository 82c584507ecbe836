"""litpipe.cores: trainings running at once share the CPU cores, never more
threads than cores, and a killed training's registration does not hold its share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from litpipe import cores
from litpipe.cores import CoreShare


@pytest.fixture(autouse=True)
def _four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this machine has, the tests see 4 cores and no user-set thread count."""
    monkeypatch.setattr(cores, "cpu_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_each_training_takes_its_share_and_gives_it_back(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    with CoreShare(tmp_path) as first:
        assert first.threads == 4 and torch.get_num_threads() == 4
        with CoreShare(tmp_path) as second:
            assert second.threads == 2
            assert first.apply(force=True) == 2  # the first gives up half when it looks
            with CoreShare(tmp_path) as third:
                assert third.threads == 1  # 4 // 3
        assert first.apply(force=True) == 4  # the others ended: all cores again
    assert torch.get_num_threads() == before
    assert not list(tmp_path.glob("*.training"))


def test_apply_counts_at_most_once_a_second_unless_forced(tmp_path: Path) -> None:
    with CoreShare(tmp_path) as first, CoreShare(tmp_path):
        assert first.apply() == 4  # counted on entry, before the second registered
        assert first.apply(force=True) == 2


def test_a_killed_trainings_registration_is_stale(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from litpipe.cores import "
            "CoreShare; s = CoreShare(Path(sys.argv[1])).__enter__(); print('ready', "
            "flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with CoreShare(tmp_path) as share:
            assert share.trainings() == 2
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            deadline = time.monotonic() + 10
            while share.trainings() != 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert share.trainings() == 1
            assert len(list(tmp_path.glob("*.training"))) == 1  # the dead one's removed
    finally:
        child.kill()
        child.wait()


def test_omp_num_threads_set_by_the_user_wins(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    before = torch.get_num_threads()
    with CoreShare(tmp_path) as share, CoreShare(tmp_path):
        assert share.fixed_by_user
        assert share.apply(force=True) == before == torch.get_num_threads()
    assert not list(tmp_path.glob("*"))  # never registered


def test_an_unwritable_registry_warns_in_one_line_and_keeps_all_cores(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # mkdir under a file fails as root too (a read-only dir would not)
    before = torch.get_num_threads()
    with CoreShare(blocker / "trainings") as share:
        assert share.apply(force=True) == before
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot register in" in err[0] and "all cores" in err[0]


def test_a_refused_rename_leaves_no_half_made_registration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A stage whose renames fail (a read-only disk, tests/test_stage.py) used to leave its
    hidden, locked-then-abandoned file in the registry for good."""
    def refuse(*_: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(cores.os, "replace", refuse)
    with CoreShare(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []
    assert "cannot register in" in capsys.readouterr().err


def test_a_dead_processs_half_made_registration_is_removed(tmp_path: Path) -> None:
    (tmp_path / ".123-deadbeef").write_text("")  # nobody holds it: its process is gone
    with CoreShare(tmp_path) as share:
        assert share.trainings() == 1
        assert [p.suffix for p in tmp_path.iterdir()] == [".training"]
