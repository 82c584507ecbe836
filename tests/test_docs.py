"""The docs show what the commands print today."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.repo import ROOT, edit_params, pipeline_env


def test_the_params_error_example_is_what_dvc_repro_prints(tmp_path: Path) -> None:
    """docs/usage.md's example of a bad value: the validate stage's real output."""
    text = (ROOT / "docs/usage.md").read_text()
    block = re.search(r"```text\n\$ dvc repro\n(.*?)```", text, re.S)
    assert block is not None
    shown = block.group(1).strip().splitlines()
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    edit_params(tmp_path / "params.yaml", {"optimizer.lr": -1})
    proc = subprocess.run([sys.executable, str(ROOT / "stages/validate.py")], cwd=tmp_path,
                          env=pipeline_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == shown
