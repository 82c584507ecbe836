"""The system (apt) packages the tests need, each with how the tests find it."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path


def _executable(name: str) -> bool:
    path = shutil.which(name) or f"/usr/bin/{name}"
    return os.access(path, os.X_OK)


# The system (apt) packages `setup.sh --dev` installs for the tests, each with how the tests
# find it. Where one is missing, the tests that need it skip, saying why: right on a laptop,
# wrong in CI, where the suite would pass without running them. So under CI=true (GitHub
# Actions sets it, .ci/run exports it) the session fails at its start instead, naming them
# (the hook pytest_sessionstart in tests/conftest.py).
SYSTEM_PACKAGES = {
    "postgresql": lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")),
    "chromium": lambda: _executable("chromium"),
    "chromium-driver": lambda: _executable("chromedriver"),
    "dataset-fashion-mnist": lambda: Path("/usr/share/datasets/fashion-mnist").is_dir(),
}
