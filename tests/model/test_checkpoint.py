"""Checkpoint loading (litpipe.model.checkpoint): a real checkpoint loads; every kind of bad
file fails with one line naming it and what to do, and nothing in it ever runs.

The good checkpoint is a real Lightning one (tests/helpers/models.py, about a second of
training on digits); the bad ones are made from it or from scratch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from litpipe.errors import LitpipeError, MissingInputError
from litpipe.model.checkpoint import CheckpointError, load_module
from litpipe.model.module import LitClassifier
from tests.helpers.models import train_checkpoint
from tests.helpers.repo import ROOT, pipeline_env


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ckpt")
    train_checkpoint(base, epochs=1)
    return base / "models/best.ckpt"


class RunsCode:
    """Pickles as a call to os.system: what a hostile checkpoint would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _bad_file(good: Path, path: Path, case: str) -> None:
    """Write the bad checkpoint ``case`` to ``path``."""
    data = good.read_bytes()
    ckpt = torch.load(good, weights_only=True)
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated-half":
        path.write_bytes(data[: len(data) // 2])
    elif case == "truncated-tail":
        path.write_bytes(data[:-100])
    elif case == "garbage":
        path.write_text("these are not the weights you are looking for\n" * 20)
    elif case == "other-zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "a zip archive, but not a PyTorch one")
    elif case == "state-dict-only":
        torch.save(ckpt["state_dict"], path)
    elif case == "bare-tensor":
        torch.save(torch.zeros(3), path)
    elif case == "other-lightning-model":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"lr": 0.1}}, path)
    elif case == "unknown-hyperparameter":
        ckpt["hyper_parameters"]["colour_space"] = "lab"
        torch.save(ckpt, path)
    elif case == "wrong-shapes":
        ckpt["hyper_parameters"]["hidden"] = [7]
        torch.save(ckpt, path)
    elif case == "missing-weights":
        ckpt["state_dict"].pop(next(iter(ckpt["state_dict"])))
        torch.save(ckpt, path)
    else:
        raise AssertionError(case)


BAD = {
    "empty": "empty file (0 bytes), not a checkpoint",
    "truncated-half": "truncated or corrupted checkpoint",
    "truncated-tail": "truncated or corrupted checkpoint",
    "garbage": "not a PyTorch checkpoint (a .ckpt is a zip archive",
    "other-zip": "truncated or corrupted checkpoint",
    "state-dict-only": "a PyTorch file but not a Lightning checkpoint of a litpipe model",
    "bare-tensor": "(it holds a Tensor;",
    "other-lightning-model": "not of a litpipe model (hyper_parameters 'network' is None",
    "unknown-hyperparameter": "unexpected keyword argument 'colour_space'",
    "wrong-shapes": "its weights do not fit the cnn network",
    "missing-weights": "1 tensor(s) missing",
}


def assert_actionable(message: str, path: Path, *fragments: str) -> None:
    """One line, naming the file first, saying what to do; never torch's unsafe advice."""
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message, message
    assert "dvc repro train" in message and "dvc pull" in message, message
    assert "weights_only" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_real_checkpoint_loads_in_eval_mode(good: Path) -> None:
    module = load_module(good)
    assert isinstance(module, LitClassifier) and not module.training
    saved = torch.load(good, weights_only=True)["state_dict"]
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoint_is_one_actionable_line(good: Path, tmp_path: Path, case: str) -> None:
    path = tmp_path / "best.ckpt"
    _bad_file(good, path, case)
    with pytest.raises(CheckpointError) as err:
        load_module(path)
    assert isinstance(err.value, LitpipeError)  # what the stages and predict report
    assert_actionable(str(err.value), path, BAD[case])


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError) as err:
        load_module(tmp_path / "best.ckpt")
    assert_actionable(str(err.value), tmp_path / "best.ckpt", "no such checkpoint file")


def test_pickled_code_is_refused_not_run_and_torch_advice_not_repeated(tmp_path: Path) -> None:
    """torch's own refusal tells the user to retry with weights_only=False, which would run
    the file's code: litpipe says it refused and why, and the code never runs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": RunsCode(marker)}, path)
    with pytest.raises(Exception, match="weights_only"):  # torch's advice, which ...
        torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError) as err:
        load_module(path)
    assert_actionable(str(err.value), path, "refused", "could run code")  # ... is not ours
    assert not marker.exists()


def test_export_stage_reports_a_bad_checkpoint_in_one_paragraph(good: Path,
                                                                tmp_path: Path) -> None:
    """Through the real stage runner: exit 2, the message, no traceback."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "models").mkdir()
    (tmp_path / "models/best.ckpt").write_bytes(good.read_bytes()[:5000])
    proc = subprocess.run([sys.executable, str(ROOT / "stages/export.py")], cwd=tmp_path,
                          env=pipeline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("litpipe export: error: models/best.ckpt: truncated or "
                               "corrupted checkpoint"), lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "models/export").exists()
