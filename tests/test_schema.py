"""params.yaml validation: bad values fail fast, with the key's path and what is allowed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from litpipe.formats import flatten
from litpipe.params import ParamsError, load_params
from litpipe.schema import Params
from tests.helpers.repo import ROOT, edit_params


def write_params(tmp_path: Path, edits: dict[str, object]) -> Path:
    """The repo's params.yaml with dotted keys set, written to ``tmp_path``."""
    path = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", path)
    edit_params(path, edits)
    return path


def test_repo_params_are_valid() -> None:
    from litpipe.data.split import val_count

    params = load_params(ROOT / "params.yaml")
    assert params.data.dataset == "fashion_mnist"
    # A fraction, so every dataset gets a split that fits it, and still Fashion-MNIST's
    # historical 5000 of 60000 (the split stage's output is unchanged by the switch).
    assert val_count(params.data.val_size, 60_000, "fashion_mnist") == 5000
    assert val_count(params.data.val_size, 1437, "digits") == 120


@pytest.mark.parametrize(("value", "parsed"), [(5000, 5000), (1, 1), (0.0833333, 0.0833333),
                                               (0.5, 0.5)])
def test_val_size_is_a_count_or_a_fraction(tmp_path: Path, value: object,
                                           parsed: object) -> None:
    got = load_params(write_params(tmp_path, {"data.val_size": value})).data.val_size
    assert got == parsed and type(got) is type(parsed)


@pytest.mark.parametrize(("value", "message"), [
    (0, "greater than or equal to 1"), (1.0, "less than 1"), (5000.0, "less than 1"),
    (-0.1, "greater than 0"), (True, "valid integer"), ("a tenth", "valid number"),
])
def test_val_size_refuses_what_is_neither(tmp_path: Path, value: object, message: str) -> None:
    """5000.0 or 1.0 is not read as a count: a float must be a fraction below 1."""
    with pytest.raises(ParamsError, match=r"data\.val_size = .*" + message):
        load_params(write_params(tmp_path, {"data.val_size": value}))


def test_dataset_rules_must_be_set_and_valid(tmp_path: Path) -> None:
    """gates.dataset_rules has no default, names known datasets only, and each rule names a
    metric its task reports, as gates.rules must."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["gates"]["dataset_rules"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"gates\.dataset_rules: missing"):
        load_params(path)
    with pytest.raises(ParamsError, match=r"gates\.dataset_rules\.imagenet.*'fashion_mnist'"):
        load_params(write_params(tmp_path, {"gates.dataset_rules": {"imagenet": {}}}))
    bad = {"cifar10": {"classification": {"test_mse": {"max": 1.0}}}}
    with pytest.raises(ParamsError, match=r"gates\.dataset_rules\.cifar10\.classification\."
                       r"test_mse: classification models do not report 'test_mse'"):
        load_params(write_params(tmp_path, {"gates.dataset_rules": bad}))
    typo = {"cifar10": {"classification": {"test_acc": {"mni": 0.5}}}}
    with pytest.raises(ParamsError, match=r"gates\.dataset_rules\.cifar10\.classification\."
                       r"test_acc\.mni: unknown key"):
        load_params(write_params(tmp_path, {"gates.dataset_rules": typo}))


def test_rules_for_prefers_the_datasets_own_rules() -> None:
    gates = load_params(ROOT / "params.yaml").gates
    source, rules = gates.rules_for("cifar10", "classification")
    assert source == "gates.dataset_rules.cifar10.classification"
    assert rules["test_acc"].min < gates.rules["classification"]["test_acc"].min
    # No entry for the dataset, or none for the task there: the general rules.
    assert gates.rules_for("mnist", "classification") == (
        "gates.rules.classification", gates.rules["classification"])
    assert gates.rules_for("cifar10", "reconstruction")[0] == "gates.rules.reconstruction"


def test_ci_params_are_valid() -> None:
    path = ROOT / "params.ci.yaml"
    if not path.exists():
        pytest.skip("params.ci.yaml not present")
    load_params(path)


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"optimizer.lr": -1}, ["optimizer.lr", "-1", "greater than 0"]),
        ({"data.dataset": "nope"}, ["data.dataset", "'nope'", "fashion_mnist", "digits"]),
        ({"trainer.max_epochs": "ten"}, ["trainer.max_epochs", "'ten'", "integer"]),
        ({"optimizer.nme": "sgd"}, ["optimizer.nme", "unknown key"]),
        ({"callbacks.early_stopping.mode": "up"},
         ["callbacks.early_stopping.mode", "'min' or 'max'"]),
        ({"model.dropout": 1.5}, ["model.dropout", "less than 1"]),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, edits: dict, expected: list[str]) -> None:
    path = write_params(tmp_path, edits)
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
    flat = flatten(load_params(ROOT / "params.yaml").model_dump(mode="json"))
    assert flat["optimizer.lr"] == 0.004
    assert flat["callbacks.early_stopping.patience"] == 3
    assert "data.mirrors.fashion_mnist" in flat


def test_stage_rejects_bad_params_without_heavy_imports(tmp_path: Path) -> None:
    """The stage stops before importing torch: the error costs a fraction of a second."""
    write_params(tmp_path, {"optimizer.lr": -1})
    # Run stages/train.py as DVC does, with an audit hook that fails on importing torch.
    code = (
        "import runpy, sys\n"
        "def hook(event, args):\n"
        "    if event == 'import' and args[0] == 'torch':\n"
        "        raise SystemExit('torch imported before validation')\n"
        "sys.addaudithook(hook)\n"
        f"runpy.run_path({str(ROOT / 'stages/train.py')!r}, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "optimizer.lr = -1" in proc.stderr
    assert "Traceback" not in proc.stderr


def _types_in(annotation: object) -> list[object]:
    """``annotation`` and every type nested in it (``dict[str, MetricRule]`` → MetricRule)."""
    return [annotation, *(t for arg in getattr(annotation, "__args__", ())
                          for t in _types_in(arg))]


def _sections(model: type[BaseModel], path: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every pydantic model in the schema, with its dotted path (``callbacks.swa``)."""
    out = [(path or "(top level)", model)]
    for name, field in model.model_fields.items():
        for arg in _types_in(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _sections(arg, f"{path}.{name}" if path else name)
    return out


@pytest.mark.parametrize(("path", "model"), _sections(Params), ids=lambda v: str(v))
def test_every_section_forbids_unknown_keys(path: str, model: type[BaseModel]) -> None:
    """A typo (``callbacks.swa.enabeld``) must fail in every section, not just some."""
    assert model.model_config.get("extra") == "forbid", path


def test_a_typo_in_a_nested_section_names_its_path(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"callbacks.swa.enabeld": True})
    with pytest.raises(ParamsError, match=r"callbacks\.swa\.enabeld: unknown key"):
        load_params(path)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("# only a comment\n", "empty"), ("null\n", "empty"),
    ("- seed\n", "top level must be a mapping of sections, got list"),
    ("42\n", "top level must be a mapping of sections, got int"),
])
def test_empty_or_non_mapping_params_are_errors(tmp_path: Path, text: str,
                                                message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=message) as err:
        load_params(path)
    assert len(str(err.value).splitlines()) == 1


def test_a_missing_key_is_an_error_not_a_default(tmp_path: Path) -> None:
    """The code holds no defaults: a key left out of params.yaml fails, naming it."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["optimizer"]["weight_decay"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"optimizer\.weight_decay: missing"):
        load_params(path)
