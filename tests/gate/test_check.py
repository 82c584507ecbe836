"""The metric gate on throw-away git repositories: pass, fail, cannot-evaluate, baselines;
and the CI around it (.ci/pipeline-check.sh, the GitHub workflow, params.ci.yaml)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from litpipe.gate.check import flatten_metrics
from litpipe.gate.cli import main as gate
from litpipe.params import load_params
from tests.helpers.repo import ROOT

BIN = Path(sys.executable).parent  # the venv's bin: litpipe, dvc, check-jsonschema

RULES = {"classification": {
    "test_acc": {"min": 0.80, "max_drop": 0.01},
    "test_loss": {"max": 0.6, "max_rise": 0.05},
    "per_class_acc.Bag": {"max_drop": 0.1, "relative": True},
}}
BASE = {"test_acc": 0.90, "test_loss": 0.30, "test_macro_f1": 0.89,
        "per_class_acc": {"Bag": 0.95, "Shirt": 0.70}}


def env() -> dict[str, str]:
    """Subprocess environment: this venv first on PATH, no GitHub summary of the caller's."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("GITHUB_STEP_SUMMARY", "GATE_BASELINE", "VIRTUAL_ENV", "DVC_ROOT")}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True, env=env()).stdout


def write(repo: Path, metrics: dict | None, rules: dict = RULES, dataset: str | None = None,
          **gates: object) -> None:
    """The repo's params.yaml with these gates (its model is a cnn, so the classification
    rules apply) and ``data.dataset`` (default: params.yaml's), and, unless None,
    reports/metrics.json."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["gates"].update({"rules": rules, **gates})
    if dataset is not None:
        raw["data"]["dataset"] = dataset
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    if metrics is not None:
        (repo / "reports").mkdir(exist_ok=True)
        (repo / "reports/metrics.json").write_text(json.dumps(metrics))


def init_repo(path: Path) -> None:
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "litpipe tests")
    git(path, "config", "user.email", "tests@litpipe.invalid")
    git(path, "config", "commit.gpgsign", "false")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo whose `main` holds baseline metrics; the work tree is the candidate."""
    init_repo(tmp_path)
    write(tmp_path, BASE)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "baseline")
    return tmp_path


def candidate(repo: Path, **changes: float) -> None:
    """Work-tree metrics: the baseline's with ``changes`` (``Bag``/``Shirt``: per class)."""
    metrics = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if key in metrics["per_class_acc"]:
            metrics["per_class_acc"][key] = value
        else:
            metrics[key] = value
    (repo / "reports/metrics.json").write_text(json.dumps(metrics))


def run_gate(repo: Path, *args: str) -> tuple[int, str]:
    md = repo / "gate.md"
    md.unlink(missing_ok=True)
    code = gate(["--repo", str(repo), "--markdown", str(md), *args])
    return code, md.read_text() if md.exists() else ""


# --- verdicts --------------------------------------------------------------------------

def test_worse_candidate_fails_and_names_the_metric(repo: Path, capsys) -> None:
    candidate(repo, test_acc=0.87)
    code, md = run_gate(repo)
    assert code == 1
    assert "## Metric gate: ❌ FAIL" in md
    assert "`test_acc` drop <= 0.01: 0.87 vs baseline 0.9" in md
    assert "| `test_acc` | drop <= 0.01 | 0.87 | 0.9 | -0.03 | ❌ FAIL |" in md
    out = capsys.readouterr().out
    drop_row = next(line for line in out.splitlines() if "drop <= 0.01" in line)
    assert drop_row.split() == ["test_acc", "drop", "<=", "0.01", "0.87", "0.9", "-0.03", "FAIL"]
    assert "result: FAIL (1 of 5 checks failed)" in out


def test_better_candidate_passes(repo: Path, capsys) -> None:
    candidate(repo, test_acc=0.93, test_loss=0.25, Bag=0.97)
    code, md = run_gate(repo)
    assert code == 0
    assert "FAIL" not in md and "## Metric gate: ✅ PASS" in md and "+0.03" in md
    assert "baseline main (" in capsys.readouterr().out  # names the revision and its commit


def test_max_rise_for_the_loss(repo: Path) -> None:
    candidate(repo, test_loss=0.34)  # +0.04: within 0.05
    assert run_gate(repo)[0] == 0
    candidate(repo, test_loss=0.36)  # +0.06: beyond, though under the absolute max 0.6
    code, md = run_gate(repo)
    assert code == 1 and "`test_loss` rise <= 0.05: 0.36 vs baseline 0.3" in md
    assert "| `test_loss` | <= 0.6 | 0.36 | 0.3 | +0.06 | ✅ PASS |" in md


def test_relative_drop_on_a_nested_metric(repo: Path) -> None:
    candidate(repo, Bag=0.95 * 0.92)  # an 8 % relative drop: within 10 %
    assert run_gate(repo)[0] == 0
    # 10.5 %: beyond; read as absolute it would pass (0.09975 < 0.1), relative it fails
    # (0.1 of 0.95 = 0.095 allowed).
    candidate(repo, Bag=0.95 * 0.895)
    code, md = run_gate(repo)
    assert code == 1
    assert "`per_class_acc.Bag` drop <= 0.1 (relative): 0.85025 vs baseline 0.95" in md


def test_nested_metric_absolute_bound(repo: Path) -> None:
    rules = {"classification": {"per_class_acc.Shirt": {"min": 0.75}}}
    write(repo, BASE, rules=rules)
    code, md = run_gate(repo)
    assert code == 1 and "`per_class_acc.Shirt` >= 0.75: 0.7" in md
    candidate(repo, Shirt=0.8)
    assert run_gate(repo)[0] == 0


def test_flatten_metrics_keeps_numbers_only() -> None:
    nested = {"a": 1, "b": {"c": 0.5, "d": {"e": 2}}, "flag": True, "name": "x", "n": None}
    assert flatten_metrics(nested) == {"a": 1.0, "b.c": 0.5, "b.d.e": 2.0}


# --- boundaries: a value exactly at a bound passes, the smallest step beyond it fails ----

JUST = 1e-9  # "just beyond": well above the gate's float tolerance (1e-12), far below
#              any real change in a metric

# (rule, baseline value or None, value exactly at the bound, direction of "beyond": -1/+1).
# Decimal values are what metrics.json holds; 0.93 - 0.925 is 0.0050000000000000044 in
# floating point, so "exactly at" must pass despite float error. The binary fractions
# (0.75, 0.125, ...) are exact, so any strict comparison fails them.
BOUNDARIES = {
    "min": ({"min": 0.92}, None, 0.92, -1),
    "min-binary": ({"min": 0.75}, None, 0.75, -1),
    "max": ({"max": 0.35}, None, 0.35, +1),
    "max-binary": ({"max": 0.25}, None, 0.25, +1),
    "max_drop": ({"max_drop": 0.005}, 0.93, 0.925, -1),
    "max_drop-binary": ({"max_drop": 0.125}, 0.75, 0.625, -1),
    "max_rise": ({"max_rise": 0.02}, 0.30, 0.32, +1),
    "max_rise-binary": ({"max_rise": 0.125}, 0.25, 0.375, +1),
    "relative-drop": ({"max_drop": 0.1, "relative": True}, 0.95, 0.855, -1),
    "relative-drop-binary": ({"max_drop": 0.25, "relative": True}, 0.5, 0.375, -1),
    "relative-rise": ({"max_rise": 0.5, "relative": True}, 0.3, 0.45, +1),
    "relative-rise-binary": ({"max_rise": 0.25, "relative": True}, 0.5, 0.625, +1),
    # Relative bounds scale by |baseline|: a negative metric still has a positive allowance.
    "relative-drop-negative": ({"max_drop": 0.5, "relative": True}, -0.5, -0.75, -1),
    "relative-rise-negative": ({"max_rise": 0.5, "relative": True}, -0.5, -0.25, +1),
}


def _verdicts(rule: dict, baseline: float | None, value: float) -> list[str]:
    from litpipe.gate.check import Baseline, check
    from litpipe.schema import MetricRule

    base = Baseline("main", {"m": baseline}, "baseline main") if baseline is not None \
        else None
    return [r.verdict for r in check({"m": MetricRule(**rule)}, {"m": value}, base, "fail")]


@pytest.mark.parametrize("case", sorted(BOUNDARIES))
def test_value_exactly_at_the_bound_passes_just_beyond_fails(case: str) -> None:
    rule, baseline, at, beyond = BOUNDARIES[case]
    assert _verdicts(rule, baseline, at) == ["PASS"], (case, at)
    assert _verdicts(rule, baseline, at + beyond * JUST) == ["FAIL"], (case, at)
    assert _verdicts(rule, baseline, at - beyond * JUST) == ["PASS"], (case, at)  # inside


def test_boundary_through_the_gate_command(repo: Path) -> None:
    """The same boundary end to end: metrics file, git baseline, exit status."""
    rules = {"classification": {"test_acc": {"min": 0.85, "max_drop": 0.05},
                                "test_loss": {"max": 0.4, "max_rise": 0.1}}}
    write(repo, BASE, rules=rules)
    git(repo, "commit", "-qam", "boundary rules")
    candidate(repo, test_acc=0.85, test_loss=0.4)  # at all four bounds at once
    assert run_gate(repo)[0] == 0
    candidate(repo, test_acc=0.85 - JUST, test_loss=0.4)
    assert run_gate(repo)[0] == 1
    candidate(repo, test_acc=0.85, test_loss=0.4 + JUST)
    assert run_gate(repo)[0] == 1


def test_nan_never_passes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "reports/metrics.json").write_text(
        json.dumps({**BASE, "test_loss": float("nan")}))  # json writes NaN
    code, md = run_gate(repo)
    assert code == 2 and md == ""  # refused before any rule: exit 2, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["litpipe gate: cannot evaluate: reports/metrics.json: test_loss = nan: "
                   "not a finite number"]


def test_without_baseline_only_absolute_bounds_count(tmp_path: Path, capsys) -> None:
    """--no-baseline needs no git at all; regression rows are shown as SKIP, not dropped."""
    write(tmp_path, {**BASE, "test_acc": 0.79})
    code, md = run_gate(tmp_path, "--no-baseline")
    assert code == 1 and "`test_acc` >= 0.8: 0.79" in md
    assert "| `test_acc` | drop <= 0.01 | 0.79 | — | — | ➖ SKIP |" in md
    assert "no baseline (regression rules skipped)" in capsys.readouterr().out
    write(tmp_path, BASE, baseline=None)  # the same from params
    assert run_gate(tmp_path)[0] == 0


def test_markdown_appends(repo: Path) -> None:
    """Appends, so $GITHUB_STEP_SUMMARY keeps what earlier steps wrote."""
    md = repo / "summary.md"
    md.write_text("earlier step\n")
    assert gate(["--repo", str(repo), "--markdown", str(md), "--title", "Gate A"]) == 0
    assert gate(["--repo", str(repo), "--markdown", str(md), "--title", "Gate B"]) == 0
    text = md.read_text()
    assert text.startswith("earlier step\n") and text.index("## Gate A") < text.index("## Gate B")


# --- baselines -------------------------------------------------------------------------

def test_missing_baseline_revision_policy(repo: Path, capsys) -> None:
    candidate(repo, test_acc=0.91)
    code, md = run_gate(repo, "--baseline", "origin/main", "--missing-baseline", "pass")
    assert code == 0 and "baseline missing: baseline revision 'origin/main' not found" in md
    code, md = run_gate(repo, "--baseline", "origin/main", "--missing-baseline", "fail")
    assert code == 1
    assert "`test_acc` drop <= 0.01: 0.91 (baseline missing: baseline revision " \
        "'origin/main' not found" in md and "(missing_baseline: fail)" in md
    # The policy from params when no flag overrides it.
    write(repo, None, missing_baseline="fail")
    assert run_gate(repo, "--baseline", "origin/main")[0] == 1
    assert "result: FAIL" in capsys.readouterr().out


def test_baseline_without_metrics_file(tmp_path: Path) -> None:
    """First commit of a project: the baseline exists but has no metrics yet."""
    init_repo(tmp_path)
    (tmp_path / "README").write_text("x")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    write(tmp_path, BASE, missing_baseline="fail")
    code, md = run_gate(tmp_path)
    assert code == 1 and "reports/metrics.json does not exist at baseline revision 'main'" in md
    assert run_gate(tmp_path, "--missing-baseline", "pass")[0] == 0


def test_metric_new_since_the_baseline(repo: Path) -> None:
    """A rule on a metric the baseline did not report yet is a missing baseline for it."""
    rules = {"classification": {"test_macro_f1": {"max_drop": 0.01}}}
    git(repo, "show", "main:reports/metrics.json")  # the baseline has test_macro_f1 ...
    write(repo, {k: v for k, v in BASE.items() if k != "test_macro_f1"}, rules=rules)
    git(repo, "commit", "-qam", "baseline without macro-F1")  # ... this new one has not
    candidate(repo)
    code, md = run_gate(repo, "--missing-baseline", "fail")
    assert code == 1 and "test_macro_f1 is not in the metrics at baseline 'main'" in md


def test_baseline_is_the_committed_file_not_the_work_tree(repo: Path) -> None:
    """The baseline comes from git at the revision; editing the work tree cannot move it."""
    git(repo, "checkout", "-q", "-b", "feature")
    candidate(repo, test_acc=0.85)
    git(repo, "commit", "-qam", "worse model")
    assert run_gate(repo)[0] == 1  # main's 0.90 vs the committed 0.85
    assert run_gate(repo, "--baseline", "HEAD")[0] == 0  # against itself


def test_project_in_a_subdirectory_of_the_git_repo(tmp_path: Path) -> None:
    init_repo(tmp_path)
    proj = tmp_path / "proj"
    proj.mkdir()
    write(proj, BASE)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "baseline")
    candidate(proj, test_acc=0.85)
    code, md = run_gate(proj)
    assert code == 1 and "vs baseline 0.9" in md


# --- rules per dataset --------------------------------------------------------------------

CIFAR_RULES = {"cifar10": {"classification": {"test_acc": {"min": 0.6, "max_drop": 0.01}}}}


def test_a_datasets_own_rules_replace_the_general_ones(tmp_path: Path, capsys) -> None:
    """A CIFAR-10 model at 0.65 passes CIFAR-10's bound and would fail the general one; the
    report names the rules it applied. Other datasets keep the general rules."""
    cifar = {**BASE, "test_acc": 0.65, "test_loss": 0.9}
    write(tmp_path, cifar, dataset="cifar10", dataset_rules=CIFAR_RULES)
    code, md = run_gate(tmp_path, "--no-baseline")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "data cifar10, rules gates.dataset_rules.cifar10.classification" in out
    assert "gates.dataset_rules.cifar10.classification" in md
    assert "| `test_acc` | >= 0.6 | 0.65 |" in md and "test_loss" not in md  # replaced whole
    write(tmp_path, cifar, dataset="mnist", dataset_rules=CIFAR_RULES)
    code, md = run_gate(tmp_path, "--no-baseline")
    assert code == 1 and "`test_acc` >= 0.8: 0.65" in md
    assert "data mnist, rules gates.rules.classification" in capsys.readouterr().out


def test_a_baseline_trained_on_another_dataset_is_not_compared(repo: Path) -> None:
    """main's Fashion-MNIST metrics are no baseline for a CIFAR-10 model: its 0.65 is not a
    0.25 drop from 0.90. The baseline counts as missing, judged by missing_baseline."""
    git(repo, "checkout", "-q", "-b", "cifar")
    write(repo, {**BASE, "test_acc": 0.65}, dataset="cifar10", dataset_rules=CIFAR_RULES)
    git(repo, "commit", "-qam", "switch to cifar10")
    code, md = run_gate(repo)
    assert code == 0, md
    assert "baseline main was trained on fashion_mnist, this model on cifar10: not " \
        "comparable (missing_baseline: pass)" in md
    assert run_gate(repo, "--missing-baseline", "fail")[0] == 1
    # Against a baseline on the same dataset, the drop rule applies again.
    write(repo, {**BASE, "test_acc": 0.60}, dataset="cifar10", dataset_rules=CIFAR_RULES)
    code, md = run_gate(repo, "--baseline", "cifar")
    assert code == 1 and "`test_acc` drop <= 0.01: 0.6 vs baseline 0.65" in md


# --- cannot evaluate (exit 2) -----------------------------------------------------------

def test_missing_metric_cannot_be_evaluated(repo: Path, capsys) -> None:
    (repo / "reports/metrics.json").write_text(json.dumps({"test_loss": 0.3}))
    assert run_gate(repo) == (2, "")
    err = capsys.readouterr().err
    assert "reports/metrics.json: test_acc is missing" in err


@pytest.mark.parametrize(("content", "message"), [
    (None, "reports/metrics.json: metrics file not found"),
    ("{not json", "reports/metrics.json: not valid JSON"),
    ("[0.9]", "reports/metrics.json: expected a JSON object of metrics, got list"),
    (b"\xff\xfe", "reports/metrics.json: cannot read metrics file"),
])
def test_unreadable_metrics_file(repo: Path, capsys, content: str | bytes | None,
                                 message: str) -> None:
    path = repo / "reports/metrics.json"
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert run_gate(repo)[0] == 2
    assert message in capsys.readouterr().err


def test_second_metrics_file_is_read_and_required(repo: Path, capsys) -> None:
    rules = {"classification": {"test_acc": {"min": 0.8}, "per_class_acc.Extra": {"min": 0.5}}}
    write(repo, None, rules=rules, metrics_files=["reports/metrics.json", "reports/extra.json"])
    assert run_gate(repo, "--no-baseline")[0] == 2
    assert "reports/extra.json: metrics file not found" in capsys.readouterr().err
    (repo / "reports/extra.json").write_text(json.dumps({"per_class_acc": {"Extra": 0.4}}))
    code, md = run_gate(repo, "--no-baseline")
    assert code == 1 and "`per_class_acc.Extra` >= 0.5: 0.4" in md


@pytest.mark.parametrize(("rules", "gates", "message"), [
    ({"classification": {"test_acc": {"minimum": 0.9}}}, {},
     "gates.rules.classification.test_acc.minimum: unknown key"),
    ({"reconstruction": {"test_acc": {"min": 0.9}}}, {},
     "reconstruction models do not report 'test_acc'"),
    ({"classification": {"per_class_acc": {"min": 0.9}}}, {},
     "'per_class_acc' is a mapping per class; name one entry"),
    ({"classification": {"test_acc": {"relative": True, "min": 0.9}}}, {},
     "relative: true needs max_drop or max_rise"),
    ({"classification": {"test_acc": {"min": 0.9, "max": 0.8}}}, {}, "min (0.9) is above max"),
    ({"classification": {"test_acc": {"max_drop": -0.1}}}, {},
     "test_acc.max_drop = -0.1: Input should be greater than or equal to 0"),
    ({"classification": {"test_acc": {}}}, {}, "a rule needs at least one of min, max"),
    ({"classification": {"test_acc": {"min": 0.9}}}, {"metrics_files": ["../metrics.json"]},
     "must be a path relative to the repository root"),
    ({"classification": {"test_acc": {"min": 0.9}}}, {"baseline": "--output=x"},
     "is not a git revision"),
    ({"reconstruction": {"test_mse": {"max": 0.1}}}, {},
     "gates.rules has rules only for reconstruction; add gates.rules.classification"),
    ({}, {"dataset_rules": {}},
     "gates.rules.classification is empty: nothing to check for a classification model"),
    ({}, {"dataset_rules": {"cifar10": {"reconstruction": {"test_mse": {"max": 0.1}}}}},
     "gates.rules has rules only for no task; add gates.rules.classification (or "
     "gates.dataset_rules.fashion_mnist.classification"),
    ({"classification": {"test_acc": {"min": 0.9}}},
     {"dataset_rules": {"cifar10": {"classification": {"per_class_acc": {"min": 0.5}}}}},
     "gates.dataset_rules.cifar10.classification.per_class_acc: 'per_class_acc' is a "
     "mapping per class"),
])
def test_bad_rules_or_params_cannot_be_evaluated(repo: Path, capsys, rules: dict,
                                                 gates: dict, message: str) -> None:
    write(repo, None, rules=rules, **gates)
    assert run_gate(repo) == (2, "")
    assert message in capsys.readouterr().err


def test_bad_revision_on_the_command_line(repo: Path, capsys) -> None:
    assert run_gate(repo, "--baseline=--upload-pack=x")[0] == 2
    assert "is not a git revision" in capsys.readouterr().err


def test_not_a_git_repo(tmp_path: Path, capsys) -> None:
    write(tmp_path, BASE)
    assert run_gate(tmp_path)[0] == 2
    err = capsys.readouterr().err
    assert "not a git repository" in err and "--no-baseline" in err


def test_git_not_installed(repo: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "no-such-bin"))
    assert run_gate(repo)[0] == 2
    assert "git is not installed" in capsys.readouterr().err


def test_missing_params_file(repo: Path, capsys) -> None:
    assert run_gate(repo, "--params", "nope.yaml")[0] == 2
    assert "nope.yaml: not found" in capsys.readouterr().err


# --- the command line, import cost ------------------------------------------------------

def test_cli_in_a_subprocess(repo: Path) -> None:
    candidate(repo, test_acc=0.85)
    proc = subprocess.run([sys.executable, "-m", "litpipe.cli", "gate", "--repo", str(repo)],
                          capture_output=True, text=True, env=env())
    assert proc.returncode == 1, proc.stderr
    assert "litpipe gate (classification; data fashion_mnist, rules " \
        "gates.rules.classification; baseline main (" in proc.stdout
    assert "result: FAIL" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "litpipe.cli", "gate", "--repo", str(repo),
                           "--params", "missing.yaml"], capture_output=True, text=True, env=env())
    assert proc.returncode == 2 and "cannot evaluate" in proc.stderr


def test_gate_imports_no_torch_lightning_or_mlflow() -> None:
    probe = ("import sys, litpipe.cli, litpipe.gate.cli; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('torch', 'lightning', 'pytorch_lightning', 'mlflow', 'torchvision')))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- CI: params.ci.yaml, .ci/pipeline-check.sh, the workflow -----------------------------

def test_ci_params_are_a_valid_offline_smoke_config() -> None:
    params = load_params(ROOT / "params.ci.yaml")
    assert params.data.dataset == "digits" and params.gates.baseline is None
    rules = params.gates.rules[params.model.task]
    assert rules and all(r.min is not None or r.max is not None for r in rules.values())
    assert load_params(ROOT / "params.yaml").gates.rules  # the real one has rules too


def _check_script_repo(tmp_path: Path) -> Path:
    """A repo with .ci/pipeline-check.sh, `main` at the baseline metrics, on a branch."""
    init_repo(tmp_path)
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci/pipeline-check.sh", tmp_path / ".ci/pipeline-check.sh")
    write(tmp_path, BASE)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "baseline")
    git(tmp_path, "checkout", "-q", "-b", "feature")
    return tmp_path


def _check_script(repo: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", ".ci/pipeline-check.sh"], cwd=repo, capture_output=True,
                          text=True, env={**env(), "PIPELINE_CHECK_SMOKE": "0", **extra},
                          timeout=120)


def test_pipeline_check_gates_committed_metrics_against_the_target(tmp_path: Path) -> None:
    repo = _check_script_repo(tmp_path)
    candidate(repo, test_acc=0.85)
    git(repo, "commit", "-qam", "worse model")
    summary = tmp_path / "step_summary.md"
    proc = _check_script(repo, GITHUB_STEP_SUMMARY=str(summary))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "=== 1/2 metric gate: reports/metrics.json vs main" in proc.stdout
    assert "2/2 CI-sized pipeline run: skipped (PIPELINE_CHECK_SMOKE=0)" in proc.stdout
    report = (repo / "reports/gate.md").read_text()
    assert "`test_acc` drop <= 0.01: 0.85 vs baseline 0.9" in report
    assert summary.read_text() == report  # the job summary gets the same report
    # A target the clone lacks is a missing baseline; params say pass.
    proc = _check_script(repo, GATE_BASELINE="origin/develop")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "baseline revision 'origin/develop' not found" in (repo / "reports/gate.md").read_text()


def test_pipeline_check_skips_the_gate_without_metrics(tmp_path: Path) -> None:
    repo = _check_script_repo(tmp_path)
    git(repo, "rm", "-q", "reports/metrics.json")
    proc = _check_script(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped: reports/metrics.json does not exist yet" in proc.stdout
    assert "## Metric gate: skipped" in (repo / "reports/gate.md").read_text()


def _workflow() -> dict:
    return yaml.safe_load((ROOT / ".github/workflows/pipeline.yml").read_text())


def test_workflow_runs_the_shared_script_on_pull_requests() -> None:
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on:` as True
    assert "pull_request" in triggers
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = [s.get("run", "") for s in steps]
    check = next(s for s in steps if "bash .ci/pipeline-check.sh" in s.get("run", ""))
    assert "origin/{0}', github.base_ref" in check["env"]["GATE_BASELINE"]
    assert any("./setup.sh --dev && .venv/bin/python -m pytest -q" in r for r in runs)
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the baseline comes from git history
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "reports/" and upload["if"] == "always()"


def test_ci_run_uses_the_same_script() -> None:
    ci_run = ROOT / ".ci/run"
    if not ci_run.exists():
        pytest.skip(".ci/run does not exist yet (the CI entry point that calls "
                    ".ci/pipeline-check.sh after the tests)")
    text = ci_run.read_text()
    assert "bash .ci/pipeline-check.sh" in text
    assert "./setup.sh --dev && .venv/bin/python -m pytest -q" in text


def test_workflow_matches_github_schema() -> None:
    """Schema check with check-jsonschema's vendored GitHub workflow schema (offline)."""
    proc = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema",
                           "vendor.github-workflows",
                           str(ROOT / ".github/workflows/pipeline.yml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("text", "message"), [
    ('"test_acc": Infinity', "test_acc = inf: not a finite number"),
    ('"test_acc": 1e999', "test_acc = inf: not a finite number"),
    ('"test_acc": 1.7', "test_acc = 1.7: outside [0, 1]"),
    ('"test_loss": -5', "test_loss = -5.0: outside >= 0"),
    ('"test_loss": -Infinity', "test_loss = -inf: not a finite number"),
    ('"per_class_acc": {"Bag": 1.01}', "per_class_acc.Bag = 1.01: outside [0, 1]"),
    ('"test_mystery": NaN', "test_mystery = nan: not a finite number"),  # no rule names it
    ('"test_acc": 0.1, "test_acc": 0.99', "key 'test_acc' appears twice (0.1 and 0.99)"),
])
def test_impossible_metrics_are_refused_before_any_rule(repo: Path, capsys,
                                                        text: str, message: str) -> None:
    """Issue 20, case 2: each of these used to pass the gate (exit 0)."""
    named = set(re.findall(r'"(\w+)":', text))
    body = json.dumps({k: v for k, v in BASE.items() if k not in named})[1:-1]
    (repo / "reports/metrics.json").write_text("{" + body + ", " + text + "}")
    assert run_gate(repo) == (2, "")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
