"""The docs show what the commands print today."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.repo import ROOT, edit_params, pipeline_env, run

NAME_END = r":| \("  # a plot's name in the docs is its title up to one of these


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


def test_the_plots_the_docs_list_are_what_dvc_plots_show_draws(tmp_path: Path) -> None:
    """README.md's count and docs/usage.md's list, in order, against DVC's own ``--json``
    of the real dvc.yaml; a title that points at another plot ("the loss curves are
    above") must point the right way."""
    from tests.test_dvc_plots import plots_json, write_reports

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    write_reports(repo, 2, confusion=[("0", "0"), ("1", "0")])
    drawn = plots_json(repo, "show")["data"]
    names = []  # what the docs call each plot: its title up to ":" or " (", or its file
    for plot_id, renders in drawn.items():
        title = renders[0]["content"].get("title") if renders[0]["type"] == "vega" else None
        title = title.get("text") if isinstance(title, dict) else title
        names.append(f"**{re.split(NAME_END, title)[0]}**" if title else f"`{plot_id}`")
        where = re.search(r"\(the loss and accuracy curves are (above|below)\)", title or "")
        if where:
            loss = list(drawn).index("Loss")
            assert (loss < len(names) - 1) == (where.group(1) == "above"), title

    readme = (ROOT / "README.md").read_text()
    assert f"`dvc plots show` draws {len(drawn)} plots" in readme
    usage = (ROOT / "docs/usage.md").read_text()
    section = usage.split("## Curves, confusion matrix and samples")[1].split("\n## ")[0]
    section = " ".join(section.split())
    assert f"draws {len(drawn)} plots, in this order" in section
    at = [section.find(name) for name in names]
    assert -1 not in at, [n for n, i in zip(names, at, strict=True) if i < 0]
    assert at == sorted(at), names
