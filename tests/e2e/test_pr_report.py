""".ci/pipeline-check.sh end to end, CI-sized run included: the Markdown report a pull
request gets (reports/gate.md, also appended to $GITHUB_STEP_SUMMARY).

The repository here is this work tree's files (what the script itself copies: tracked, or
untracked and not ignored) committed as `main`, then a branch that changes a param and the
committed metrics, as a pull request would. The script then gates the branch against
`main`, diffs metrics and params against it, and runs the CI-sized `dvc repro` with
params.ci.yaml (scikit-learn's digits, offline, about a minute).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.repo import ROOT, pipeline_env, run

pytestmark = pytest.mark.e2e


def _pull_request_repo(dest: Path) -> Path:
    """The work tree's files as `main`, and a branch `feature` with optimizer.lr 0.003 and
    a test_acc 0.001 lower in the committed reports/metrics.json."""
    dest.mkdir()
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=ROOT, capture_output=True,
                           check=True).stdout
    subprocess.run(["tar", "--null", "--ignore-failed-read", "-T", "-", "-cf",
                    str(dest / ".files.tar")], cwd=ROOT, input=files, check=True,
                   capture_output=True)
    subprocess.run(["tar", "-xf", ".files.tar"], cwd=dest, check=True)
    (dest / ".files.tar").unlink()
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "main"], dest)
    run(["git", "checkout", "-q", "-b", "feature"], dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    assert params["optimizer"]["lr"] == 0.004  # the diff below is against this value
    text = (dest / "params.yaml").read_text()
    (dest / "params.yaml").write_text(re.sub(r"(?m)^  lr: 0\.004 ", "  lr: 0.003 ", text))
    metrics = json.loads((dest / "reports/metrics.json").read_text())
    metrics["test_acc"] = round(metrics["test_acc"] - 0.001, 6)
    (dest / "reports/metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    run(["git", "commit", "-qam", "a pull request: lr 0.003"], dest)
    return dest


def test_pull_request_report_has_gate_diffs_and_curves(tmp_path: Path) -> None:
    repo = _pull_request_repo(tmp_path / "repo")
    base_acc = json.loads((ROOT / "reports/metrics.json").read_text())["test_acc"]
    summary = tmp_path / "step_summary.md"
    env = {k: v for k, v in pipeline_env().items()
           if k not in ("GATE_BASELINE", "VIRTUAL_ENV", "PIPELINE_CHECK_SMOKE")}
    proc = subprocess.run(["bash", ".ci/pipeline-check.sh"], cwd=repo, capture_output=True,
                          text=True, timeout=1200,
                          env={**env, "GATE_BASELINE": "main",
                               "GITHUB_STEP_SUMMARY": str(summary)})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = (repo / "reports/gate.md").read_text()
    assert summary.read_text() == report

    # 1. The gate's table for the committed metrics against the target branch.
    assert "## Metric gate: reports/metrics.json vs `main`: ✅ PASS" in report
    assert f"| `test_acc` | drop <= 0.005 | {base_acc - 0.001:.6g} | {base_acc:.6g} |" in report
    # 2. The metric diff and the params diff against it, as Markdown tables.
    metrics = report.split("### Metrics: `main` → this branch (dvc metrics diff)")[1]
    assert re.search(rf"\| reports/metrics.json +\| test_acc +\| {base_acc:g} +\| "
                     rf"{base_acc - 0.001:g} +\| -0\.001 +\|", metrics), metrics[:800]
    params = report.split("### Params: `main` → this branch (dvc params diff)")[1]
    assert re.search(r"\| params.yaml +\| optimizer.lr +\| 0.004 +\| 0.003 +\|", params)
    # 3. The curves: the committed run's picture and numbers, and the CI-sized run's.
    for title, image, history in (
            ("committed run", "curves.png", repo / "reports/train_history.csv"),
            ("CI-sized run", "ci/curves.png", repo / "reports/ci/train_history.csv")):
        section = report.split(f"### Learning curves of the {title}")[1].split("\n## ")[0]
        assert f"]({image})" in section and (repo / "reports" / image).stat().st_size > 0
        epochs = len(history.read_text().splitlines()) - 1
        assert epochs >= 1
        assert "| epoch | train_loss | val_loss | train_acc | val_acc |" in section
        assert len(re.findall(r"(?m)^\| \d+ \| ", section)) == epochs, section
    assert (repo / "reports/ci/plots/index.html").is_file()  # dvc plots diff main
    # 4. The CI-sized run's own gate, on digits.
    assert "## Metric gate: CI-sized run (params.ci.yaml): ✅ PASS" in report
    assert "data digits, rules gates.rules.classification" in report
