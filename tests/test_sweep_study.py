"""The study's bookkeeping (litpipe.sweep.study): what counts as finished, which trial is
surplus when two workers ask at once, and one sampler stream per worker."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from litpipe.sweep import study as studies
from litpipe.sweep.spec import load_sweep
from tests.helpers.repo import ROOT


@pytest.fixture
def sweep(tmp_path: Path):  # noqa: ANN201
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "sweep.yaml").write_text((ROOT / "sweep.yaml").read_text().replace(
        "trials: 20 ", "trials: 3  "))
    return load_sweep(tmp_path / "sweep.yaml")


def test_surplus_and_tally(sweep, tmp_path: Path) -> None:  # noqa: ANN001
    storage = studies.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = studies.open_study(sweep, storage)
    assert sweep.trials == 3
    done = study.ask()
    study.tell(done, 0.5)
    pruned = study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    # Two workers ask together for the one missing trial: only the later is surplus.
    a, b = study.ask(), study.ask()
    assert studies.tally(study) == (2, 2)
    assert not studies.is_surplus(study, a.number, sweep.trials)
    assert studies.is_surplus(study, b.number, sweep.trials)
    study.tell(a, 0.9)
    assert studies.best_trial(study).number == a.number  # never the PRUNED one


def test_each_worker_has_its_own_sampler_stream(sweep) -> None:  # noqa: ANN001
    firsts = []
    for worker in (0, 1, 0):
        study = optuna.create_study(sampler=studies.build_sampler(sweep, worker),
                                    direction="maximize")
        firsts.append(studies.suggest(study.ask(), sweep))
    assert firsts[0] == firsts[2] != firsts[1]  # seeded per worker, reproducible
