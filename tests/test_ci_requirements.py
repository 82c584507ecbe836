"""Under CI=true a missing system package fails the test session instead of skipping tests.

tests/conftest.py checks SYSTEM_PACKAGES (tests/helpers/system.py) at session start. Here a
throw-away pytest session uses that same hook (tests/conftest.py loaded as a plugin) with the
package list replaced (one that is missing, or only ones that are present), so the check is
exercised whatever this machine has installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.repo import ROOT


def _session(tmp_path: Path, packages: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    """A pytest session in ``tmp_path`` whose SYSTEM_PACKAGES are ``packages`` (Python), with
    the suite's hooks (tests/conftest.py, loaded as a plugin)."""
    (tmp_path / "conftest.py").write_text(
        "from tests.helpers.system import SYSTEM_PACKAGES\n"
        "SYSTEM_PACKAGES.clear()\n"
        f"SYSTEM_PACKAGES.update({packages})\n")
    (tmp_path / "test_something.py").write_text("def test_something():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "tests.conftest", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_in_ci_a_missing_system_package_fails_the_session(tmp_path: Path) -> None:
    proc = _session(tmp_path, "{'here': lambda: True, 'postgresql': lambda: False}", "true")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert "the system package(s) postgresql are missing" in out
    assert "1 passed" not in out  # no test ran


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_the_tests_run_and_skip_for_themselves(tmp_path: Path,
                                                          ci: str | None) -> None:
    proc = _session(tmp_path, "{'postgresql': lambda: False}", ci)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_in_ci_with_everything_present_the_tests_run(tmp_path: Path) -> None:
    proc = _session(tmp_path, "{'postgresql': lambda: True}", "true")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_the_list_matches_what_setup_installs() -> None:
    """Every package setup.sh --dev installs with apt is checked, and nothing else."""
    from tests.helpers.system import SYSTEM_PACKAGES

    text = (ROOT / "setup.sh").read_text()
    apt = set()
    for line in text.splitlines():
        line = line.split("#")[0]
        for key in ("apt_pkgs=(", "apt_pkgs+=("):
            if key in line:
                apt |= set(line.split(key)[1].split(")")[0].split())
    assert apt == set(SYSTEM_PACKAGES)


def test_ci_run_declares_itself_ci() -> None:
    """.ci/run is CI's entry point: it exports CI=true before the tests, so a machine that
    runs it without the variable still fails on a missing package rather than skipping."""
    text = (ROOT / ".ci/run").read_text()
    export = text.index("export CI=true")
    assert export < text.index(".venv/bin/python -m pytest")
