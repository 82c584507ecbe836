"""params.yaml validation: bad values fail fast, with the key's path and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from litpipe.config import ParamsError, flatten, load_params

ROOT = Path(__file__).resolve().parents[1]


def write_params(tmp_path: Path, **edits: object) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in edits.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repo_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.dataset == "fashion_mnist"
    assert params.data.val_size == 5000


def test_ci_params_are_valid() -> None:
    path = ROOT / "params.ci.yaml"
    if not path.exists():
        pytest.skip("params.ci.yaml not present")
    load_params(path)


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"train__lr": -1}, ["train.lr", "-1", "greater than 0"]),
        ({"data__dataset": "nope"}, ["data.dataset", "'nope'", "fashion_mnist", "digits"]),
        ({"train__epochs": "ten"}, ["train.epochs", "'ten'", "integer"]),
        ({"train__optimizr": "sgd"}, ["train.optimizr", "unknown key"]),
        ({"train__early_stopping__mode": "up"}, ["train.early_stopping.mode", "'min' or 'max'"]),
        ({"model__dropout": 1.5}, ["model.dropout", "less than 1"]),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, edits: dict, expected: list[str]) -> None:
    path = write_params(tmp_path, **edits)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    for fragment in expected:
        assert fragment in str(err.value)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + "\nlearning_rate: 0.1\n")
    with pytest.raises(ParamsError, match="learning_rate: unknown key"):
        load_params(path)


def test_not_yaml_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_flatten_covers_every_leaf() -> None:
    flat = flatten(load_params(ROOT / "params.yaml"))
    assert flat["train.lr"] == 0.002
    assert flat["train.early_stopping.patience"] == 3
    assert "data.mirrors.fashion_mnist" in flat


def test_stage_rejects_bad_params_without_heavy_imports(tmp_path: Path) -> None:
    """The stage stops before importing torch: the error costs a fraction of a second."""
    path = write_params(tmp_path, train__lr=-1)
    code = (
        "import sys; from litpipe.stage_runner import run_stage; "
        f"rc = run_stage('train', {str(path)!r}); "
        "assert 'torch' not in sys.modules, 'torch imported before validation'; "
        "sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "train.lr = -1" in proc.stderr
    assert "Traceback" not in proc.stderr
