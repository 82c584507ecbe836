"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.repo import make_repo_copy


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A throw-away repository to run ``dvc repro`` in."""
    return make_repo_copy(tmp_path / "repo")
