"""The metric gate on throw-away git repositories: pass, fail, cannot-evaluate, baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from litpipe.gates import main as gate
from tests.conftest import pipeline_env

ROOT = Path(__file__).resolve().parents[1]

RULES = {"classification": {
    "test_acc": {"min": 0.80, "max_drop": 0.01},
    "test_loss": {"max": 0.6, "max_rise": 0.05},
    "per_class_acc.Bag": {"max_drop": 0.1, "relative": True},
}}
BASE = {"test_acc": 0.90, "test_loss": 0.30, "test_macro_f1": 0.89,
        "per_class_acc": {"Bag": 0.95, "Shirt": 0.70}}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env=pipeline_env())


def write(repo: Path, metrics: dict, rules: dict = RULES, **gates: object) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["gates"].update({"rules": rules, **gates})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    (repo / "reports").mkdir(exist_ok=True)
    (repo / "reports/metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo whose `main` holds baseline metrics; the work tree is the candidate."""
    git(tmp_path, "init", "-q", "-b", "main")
    write(tmp_path, BASE)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "baseline")
    return tmp_path


def candidate(repo: Path, **changes: object) -> None:
    metrics = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if key == "Bag":
            metrics["per_class_acc"]["Bag"] = value
        else:
            metrics[key] = value
    (repo / "reports/metrics.json").write_text(json.dumps(metrics))


def run_gate(repo: Path, *args: str) -> tuple[int, str]:
    md = repo / "gate.md"
    md.unlink(missing_ok=True)
    code = gate(["--repo", str(repo), "--markdown", str(md), *args])
    return code, md.read_text() if md.exists() else ""


def test_worse_candidate_fails_and_names_the_metric(repo: Path, capsys) -> None:
    candidate(repo, test_acc=0.87)
    code, md = run_gate(repo)
    assert code == 1
    assert "❌ FAIL" in md and "`test_acc` drop <= 0.01: 0.87 vs baseline 0.9" in md
    out = capsys.readouterr().out
    assert "test_acc" in out and "FAIL" in out and "0.87" in out and "0.9 " in out


def test_better_candidate_passes(repo: Path) -> None:
    candidate(repo, test_acc=0.93, test_loss=0.25, Bag=0.97)
    code, md = run_gate(repo)
    assert code == 0 and "FAIL" not in md and "+0.03" in md


def test_loss_rise_and_relative_drop(repo: Path) -> None:
    candidate(repo, test_loss=0.36)
    assert run_gate(repo)[0] == 1
    candidate(repo, Bag=0.95 * 0.92)  # an 8 % relative drop: within 10 %
    assert run_gate(repo)[0] == 0
    candidate(repo, Bag=0.95 * 0.88)  # 12 %: beyond
    code, md = run_gate(repo)
    assert code == 1 and "per_class_acc.Bag" in md


def test_absolute_bound_without_baseline(repo: Path) -> None:
    candidate(repo, test_acc=0.79)
    code, md = run_gate(repo, "--no-baseline")
    assert code == 1 and ">= 0.8" in md and "drop" not in md


def test_missing_metric_cannot_be_evaluated(repo: Path, capsys) -> None:
    (repo / "reports/metrics.json").write_text(json.dumps({"test_loss": 0.3}))
    assert run_gate(repo)[0] == 2
    err = capsys.readouterr().err
    assert "metric(s) per_class_acc.Bag, test_acc named in gates.rules not in the metrics " \
        "files (found: test_loss)" in err


def test_missing_metrics_file(repo: Path, capsys) -> None:
    (repo / "reports/metrics.json").unlink()
    assert run_gate(repo)[0] == 2
    assert "metrics file not found" in capsys.readouterr().err


def test_missing_baseline_policy(repo: Path) -> None:
    candidate(repo, test_acc=0.91)
    code, md = run_gate(repo, "--baseline", "origin/main", "--missing-baseline", "pass")
    assert code == 0 and "baseline revision 'origin/main' not found" in md
    code, md = run_gate(repo, "--baseline", "origin/main", "--missing-baseline", "fail")
    assert code == 1 and "missing_baseline: fail" in md


def test_baseline_without_metrics_file(tmp_path: Path) -> None:
    """First commit of a project: the baseline exists but has no metrics yet."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "README").write_text("x")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    write(tmp_path, BASE, missing_baseline="fail")
    code, md = run_gate(tmp_path)
    assert code == 1 and "does not exist at baseline revision 'main'" in md


def test_bad_rule_is_a_params_error(repo: Path, capsys) -> None:
    write(repo, BASE, rules={"classification": {"test_acc": {"minimum": 0.9}}})
    assert run_gate(repo)[0] == 2
    assert "gates.rules.classification.test_acc.minimum: unknown key" in capsys.readouterr().err
    write(repo, BASE, rules={"reconstruction": {"test_acc": {"min": 0.9}}})
    assert run_gate(repo)[0] == 2
    assert "reconstruction models do not report 'test_acc'" in capsys.readouterr().err


def test_not_a_git_repo(tmp_path: Path, capsys) -> None:
    write(tmp_path, BASE)
    assert run_gate(tmp_path)[0] == 2
    assert "not a git repository" in capsys.readouterr().err


def test_cli_subprocess_is_torch_free(repo: Path) -> None:
    candidate(repo, test_acc=0.85)
    proc = subprocess.run([sys.executable, "-m", "litpipe.cli", "gate", "--repo", str(repo)],
                          capture_output=True, text=True, env=pipeline_env())
    assert proc.returncode == 1 and "FAIL" in proc.stdout
    probe = subprocess.run([sys.executable, "-c", "import sys, litpipe.gates, litpipe.cli; "
                            "print(sorted(m for m in ('torch', 'lightning', 'mlflow') "
                            "if m in sys.modules))"], capture_output=True, text=True)
    assert probe.stdout.strip() == "[]"


def test_workflow_and_ci_run_the_same_script() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/pipeline.yml").read_text())
    steps = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    assert any("bash .ci/pipeline-check.sh" in s for s in steps)
    assert any("./setup.sh --dev && .venv/bin/python -m pytest -q" in s for s in steps)
    ci = (ROOT / ".ci/run").read_text()
    assert "bash .ci/pipeline-check.sh" in ci
    assert "./setup.sh --dev && .venv/bin/python -m pytest -q" in ci
    # `on:` parses as True in YAML 1.1; either way pull requests trigger it.
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers


def test_workflow_matches_github_schema() -> None:
    """Schema check with check-jsonschema's vendored GitHub workflow schema (offline)."""
    proc = subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"),
                           "--builtin-schema", "vendor.github-workflows",
                           str(ROOT / ".github/workflows/pipeline.yml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
