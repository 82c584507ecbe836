"""Fixtures and hooks for the whole suite; the helpers they use are in tests/helpers/.

Fixtures that only one directory's tests use live in that directory's conftest.py
(tests/training/, tests/e2e/).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers.http import Routes, serve
from tests.helpers.system import SYSTEM_PACKAGES


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI=true, a system package the tests need must be there (see SYSTEM_PACKAGES)."""
    if os.environ.get("CI", "").lower() != "true":
        return
    missing = [name for name, present in SYSTEM_PACKAGES.items() if not present()]
    if missing:
        pytest.exit(f"CI=true and the system package(s) {', '.join(missing)} are missing: "
                    "their tests would only be skipped. Install them (./setup.sh --dev) "
                    "or run without CI=true.", returncode=3)


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may write into a developer's real MLflow store or DVC repo by accident."""
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Routes]]:
    """(base URL, routes) of a loopback HTTP server shared by this module's tests: the
    downloader's mirror (tests/data/test_download.py, tests/e2e/test_datasets.py)."""
    routes = Routes()
    with serve(routes) as url:
        yield url, routes
