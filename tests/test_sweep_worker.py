"""A worker's side of several machines (litpipe.sweep.worker): a failed push never fails a
trial and is retried, and the best trial is not applied where its experiment is missing.
(Real pushes and pulls between two clones: tests/e2e/test_sweep.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from litpipe.sweep import remote, worker
from litpipe.sweep import study as studies
from litpipe.sweep.spec import Sweep, SweepError, load_sweep
from tests.helpers.repo import ROOT


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sweep:
    """The repository's sweep in a git clone of its own, with one finished trial."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "sweep.yaml").write_text((ROOT / "sweep.yaml").read_text())
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "remote", "add", "origin", str(tmp_path / "nowhere.git")],
                   cwd=tmp_path, check=True)
    sweep = load_sweep(tmp_path / "sweep.yaml")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    monkeypatch.setenv(studies.STORAGE_ENV, storage)
    study = studies.open_study(sweep, studies.open_storage(storage))
    trial = study.ask()
    studies.suggest(trial, sweep)
    trial.set_user_attr("dvc_exp", f"{sweep.study}-{trial.number}")
    study.tell(trial, 0.9)
    return sweep


def test_a_failed_push_is_one_line_and_retried(sweep: Sweep, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    name = f"{sweep.study}-0"
    monkeypatch.setattr(remote, "exp_refs", lambda root, git_remote=None: (
        {} if git_remote else {name: f"refs/exps/ab/cd/{name} 1234"}))
    pushed: list[str] = []

    def push(root: Path, git_remote: str, exp: str) -> None:
        if not pushed:
            pushed.append("refused")
            raise remote.RemoteError("the remote hung up")
        pushed.append(exp)

    monkeypatch.setattr(remote, "push", push)
    w = worker.Worker(sweep, tmp_path / "sweep.yaml", tmp_path, push="origin")
    study = studies.load_study(sweep, w.storage_url)
    assert w._push_finished(study) is False  # the trial's end: reported, not raised
    err = capsys.readouterr().err.splitlines()
    assert err == [f"litpipe sweep: could not push {name} to origin (retried after the next "
                   "trial): the remote hung up"]
    assert w._push_finished(study) is True  # the next trial's end
    assert pushed == ["refused", name]


def test_the_best_is_not_applied_where_its_experiment_is_missing(sweep: Sweep,
                                                                 tmp_path: Path) -> None:
    before = (tmp_path / "params.yaml").read_text()
    with pytest.raises(SweepError) as err:
        worker.apply_best(sweep, tmp_path)
    assert f"`dvc exp pull --run-cache origin {sweep.study}-0`" in str(err.value)
    assert "--pull origin" in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "params.yaml").read_text() == before
