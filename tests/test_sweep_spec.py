"""sweep.yaml's validation (litpipe.sweep.spec): one line per bad key, the space checked
against params.yaml, and no torch or optuna loaded to say so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from litpipe.sweep.spec import SweepError, cli_value, load_sweep
from tests.helpers.repo import ROOT, pipeline_env


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "sweep.yaml").write_text((ROOT / "sweep.yaml").read_text())
    return tmp_path


def _edit(path: Path, edits: dict[str, object]) -> None:
    raw = yaml.safe_load(path.read_text())
    for dotted, value in edits.items():
        node = raw
        *parents, leaf = dotted.split("|")  # space keys hold dots: '|' separates levels
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw))


def test_the_repository_sweep_is_valid() -> None:
    sweep = load_sweep(ROOT / "sweep.yaml")
    assert sweep.target == "train"  # a validation objective: trials stop after training


@pytest.mark.parametrize(("edits", "line"), [
    ({"trials": 0}, "  - trials = 0: Input should be greater than or equal to 1"),
    ({"sampler|name": "grid"}, "  - sampler.name = 'grid': Input should be 'tpe' or 'random'"),
    ({"space|optimizer.lr": {"type": "float", "low": 0.1, "high": 0.01}},
     "  - space.optimizer.lr: low (0.1) must be below high (0.01)"),
    ({"space|optimizer.momentum": {"type": "float", "low": -1.0, "high": 0.5}},
     "  - space.optimizer.momentum = -1.0: params.yaml refuses it: optimizer.momentum = -1.0:"
     " Input should be greater than or equal to 0"),
    ({"space|model.nme": {"type": "categorical", "choices": ["cnn"]}},
     "  - space.model.nme = 'cnn': params.yaml refuses it: model.nme: unknown key (check the "
     "spelling against params.yaml's comments)"),
    ({"space|tracking.experiment": {"type": "categorical", "choices": ["x"]}},
     "  - space.tracking.experiment: not sweepable (every trial shares tracking)"),
], ids=["range", "choice", "bounds", "params-range", "params-key", "fixed"])
def test_a_bad_key_is_named(sweep_dir: Path, edits: dict, line: str) -> None:
    _edit(sweep_dir / "sweep.yaml", edits)
    with pytest.raises(SweepError) as err:
        load_sweep(sweep_dir / "sweep.yaml")
    assert str(err.value).splitlines()[1:] == [line]


@pytest.mark.parametrize(("edits", "says"), [
    ({"storage": "postgresql://me:secret@db/optuna"}, "a password does not belong"),
    ({"pruner|monitor": "val_loss"}, "use val_acc"),
    ({"objective|metric": "accuracy"}, "use val_loss | val_acc"),
])
def test_inconsistent_sections(sweep_dir: Path, edits: dict, says: str) -> None:
    _edit(sweep_dir / "sweep.yaml", edits)
    with pytest.raises(SweepError, match=says):
        load_sweep(sweep_dir / "sweep.yaml")


def test_check_loads_neither_torch_nor_optuna(sweep_dir: Path) -> None:
    code = ("import sys; from litpipe.cli import main; rc = main(['sweep', '--check']); "
            "print(rc, 'torch' in sys.modules, 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=sweep_dir, env=pipeline_env(),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines()[-1] == "0 False False"


def test_cli_values_read_back_as_yaml() -> None:
    for value in (0.003067610014981275, 1e-06, 3, True, None, "adamw"):
        assert yaml.safe_load(cli_value(value)) == value
