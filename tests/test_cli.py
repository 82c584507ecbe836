"""`litpipe validate` through the real entry point (``python -m litpipe.cli``).

A valid file prints the typed config as JSON and exits 0; an invalid one exits 2 with the
error on stderr, one line per bad key naming it, nothing on stdout, and no traceback.
(`litpipe gate` and `litpipe predict` have their own test files.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from litpipe.params import load_params
from tests.helpers.repo import ROOT, edit_params, pipeline_env


def litpipe(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "litpipe.cli", *args], cwd=cwd,
                          env=pipeline_env(), capture_output=True, text=True, timeout=60)


def test_validate_prints_the_typed_config(tmp_path: Path) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    proc = litpipe(tmp_path, "validate")  # params.yaml of the current directory
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    printed = json.loads(proc.stdout)
    assert printed == load_params(tmp_path / "params.yaml").model_dump(mode="json")
    assert printed["optimizer"]["lr"] == load_params(ROOT / "params.yaml").optimizer.lr


@pytest.mark.parametrize(("edits", "line"), [
    ({"optimizer.lr": -1}, "  - optimizer.lr = -1: Input should be greater than 0 or "
                           "Input should be 'auto'"),
    ({"trainer.max_epochs": "ten"}, "  - trainer.max_epochs = 'ten': Input should be a valid "
                                    "integer, unable to parse string as an integer"),
    ({"optimizer.nme": "sgd"}, "  - optimizer.nme: unknown key (check the spelling against "
                               "params.yaml's comments)"),
], ids=["out-of-range", "wrong-type", "unknown-key"])
def test_validate_names_the_bad_key(tmp_path: Path, edits: dict, line: str) -> None:
    path = tmp_path / "bad.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    edit_params(path, edits)
    proc = litpipe(tmp_path, "validate", "--params", str(path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [f"litpipe validate: error: {path}: 1 invalid value(s):", line]


def test_validate_missing_or_broken_file(tmp_path: Path) -> None:
    proc = litpipe(tmp_path, "validate")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "litpipe validate: error: params.yaml: not found (run from the repository root)"]
    (tmp_path / "params.yaml").write_text("seed: [1,\n")
    proc = litpipe(tmp_path, "validate")
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("litpipe validate: error: params.yaml: not valid YAML")


def test_version_and_help_follow_convention(tmp_path: Path) -> None:
    from litpipe import __version__

    version = litpipe(tmp_path, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"litpipe {__version__}")
    top = litpipe(tmp_path, "--help")
    assert top.returncode == 0 and "``" not in top.stdout and ".;" not in top.stdout
    for name in ("validate", "gate", "predict", "sweep"):
        assert name in top.stdout
        sub = litpipe(tmp_path, name, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: litpipe {name}"), sub
    assert "--params FILE" in litpipe(tmp_path, "validate", "--help").stdout


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`litpipe validate | head -1`: no BrokenPipeError traceback. The pipe's reading end is
    closed before the command starts, so its first write fails, whatever the timing."""
    import os

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "litpipe.cli", "validate"], cwd=tmp_path,
                              env=pipeline_env(), stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(write)
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports a closed pipe
