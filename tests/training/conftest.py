"""Fixtures of the training tests: the digits through the real split stage, a scratch dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.repo import ROOT


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scikit-learn's digits through the real split stage (200 held out for validation)."""
    from litpipe.data.split import split as split_stage
    from litpipe.params import load_params

    base = tmp_path_factory.mktemp("digits")
    (base / "raw/digits").mkdir(parents=True)
    split_stage(load_params(ROOT / "params.yaml", overrides={
        "data.dataset": "digits", "data.val_size": 200}), base / "raw", base / "processed")
    return base / "processed"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, made the current one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
