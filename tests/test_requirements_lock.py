"""requirements.lock is what every machine runs: check it, and check this venv against it.

setup.sh installs the lock with `pip install --require-hashes` (every package pinned, every
file checked against the lock's sha256), so two machines that ran it hold the same versions of
everything. These tests prove that for the venv they run in (CI's, made by setup.sh from a
clean clone): each locked package is installed at exactly its locked version. They also catch
a lock that has gone stale (pyproject.toml changed without refreshing it) or that was written
with machine-specific index options, and they check that setup.sh stops in CI when a system
package the tests need cannot be installed, instead of letting those tests skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.repo import ROOT

LOCK = ROOT / "requirements.lock"
# One pinned entry: `name==version \` followed by its `--hash=sha256:<hex>` lines.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*(?:\\|$)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def read_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """Map each locked package (canonical name) to its version and sha256 hashes."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for line in text.splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m[1])
            assert current not in pins, f"{current} pinned twice in the lock"
            pins[current] = (m[2], [])
        elif current and (h := HASH.search(line)):
            pins[current][1].append(h[1])
        elif line.strip() and not line.lstrip().startswith("#"):
            # Anything else (an option line, an unpinned requirement, a URL) would make
            # installs differ between machines, or name a machine's own package index.
            raise AssertionError(f"unexpected line in {LOCK.name}: {line!r}")
    return pins


@pytest.fixture(scope="module")
def lock() -> dict[str, tuple[str, list[str]]]:
    return read_lock(LOCK.read_text())


def test_every_locked_package_has_a_version_and_hashes(
        lock: dict[str, tuple[str, list[str]]]) -> None:
    assert len(lock) > 100, "the lock is missing most of the dependency tree"
    no_hashes = sorted(name for name, (_, hashes) in lock.items() if not hashes)
    assert not no_hashes, f"locked without hashes (pip --require-hashes refuses): {no_hashes}"


def test_lock_covers_pyproject(lock: dict[str, tuple[str, list[str]]]) -> None:
    """Every requirement of pyproject.toml (runtime, dev, server) is locked at a version that
    satisfies it: a dependency added or re-ranged without refreshing the lock fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["dev"], *extras["server"]]
    problems = []
    for spec in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{spec}: not in the lock")
        elif not req.specifier.contains(lock[name][0], prereleases=True):
            problems.append(f"{spec}: the lock has {lock[name][0]}")
    assert not problems, ("pyproject.toml and requirements.lock disagree (refresh the lock as "
                          "the README says):\n" + "\n".join(problems))


def test_installed_versions_equal_the_lock(lock: dict[str, tuple[str, list[str]]]) -> None:
    """The venv running the tests holds exactly the locked version of every locked package
    (what `pip freeze` would show), so CI proves that setup.sh installs the lock."""
    wrong = []
    for name, (version, _) in sorted(lock.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            wrong.append(f"{name}: locked {version}, installed {installed}")
    assert not wrong, "this venv differs from requirements.lock (run ./setup.sh --dev):\n" + \
        "\n".join(wrong)


def test_read_lock_rejects_what_would_break_reproducibility() -> None:
    """The parser the checks above rely on: it sees pins and hashes, and refuses lines that
    make an install machine-dependent."""
    good = "a-b==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via x\nc==2\n"
    assert read_lock(good) == {"a-b": ("1.0", ["0" * 64]), "c": ("2", [])}
    for bad in ("--extra-index-url file:///opt/somewhere\n", "--find-links /opt/wheels\n",
                "torch>=2.14\n", "https://example.invalid/x.whl\n"):
        with pytest.raises(AssertionError, match="unexpected line"):
            read_lock(good + bad)


# --- setup.sh: a system package the tests need and cannot get -------------------------------

def fake_tools(bin_dir: Path) -> None:
    """apt-get and dpkg stand-ins that install nothing: every package stays missing."""
    bin_dir.mkdir()
    for tool, body in (("dpkg", "exit 1"), ("apt-get", "echo fake apt-get: failed >&2; exit 100"),
                       ("fake-python", "echo fake python reached; exit 3")):
        path = bin_dir / tool
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


@pytest.mark.parametrize("ci", [True, False])
def test_setup_fails_in_ci_when_a_system_package_is_missing(ci: bool, tmp_path: Path) -> None:
    """With CI=true, setup.sh --dev exits 1 before touching Python when apt cannot install
    what the tests need; outside CI it warns and goes on (the tests then skip, saying why)."""
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy2(ROOT / "setup.sh", work / "setup.sh")  # no .venv here: it would make one
    fake_tools(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    env["PYTHON"] = "fake-python"  # reached only when setup goes on to make the venv
    if ci:
        env["CI"] = "true"
    proc = subprocess.run(["bash", str(work / "setup.sh"), "--dev"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1, out
        assert ("error: could not install the system package(s) dataset-fashion-mnist "
                "postgresql chromium chromium-driver") in proc.stderr, out
        assert "fake python reached" not in out
    else:
        assert "warning: could not install dataset-fashion-mnist postgresql" in out, out
        assert "fake python reached" in out  # it went on to make the venv
