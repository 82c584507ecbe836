"""``litpipe gate``: fail a build when metrics fall below bounds or regress against a baseline.

The rules come from ``gates:`` in ``params.yaml`` (the section for the trained model's task).
Current values come from the metrics files in the work tree; baseline values from git
(``git show REV:reports/metrics.json``, as ``dvc metrics diff`` does), never from a rerun.
Exit codes: 0 every rule passes, 1 a rule fails, 2 the gate cannot be evaluated (missing
metric or file, bad params, bad revision spec). Imports neither torch nor lightning, nor
mlflow: it answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litpipe.config import ParamsError, load_params
from litpipe.gate_rules import GatesConfig, MetricRule


class GateError(Exception):
    """The gate cannot be evaluated; exit code 2."""


@dataclass
class Row:
    """One checked bound: what was compared, and the verdict."""

    metric: str
    rule: str
    value: float | None
    baseline: float | None
    delta: float | None
    verdict: str  # PASS | FAIL | SKIP
    note: str = ""


def flatten_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    """Nested metrics JSON → ``{"per_class_acc.Bag": 0.99, ...}`` (numbers only)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_metrics(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, bool):
        pass
    elif isinstance(obj, int | float):
        out[prefix] = float(obj)
    return out


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        raise GateError("git is not installed; the baseline comes from git history") from None


def current_metrics(repo: Path, files: list[str]) -> dict[str, float]:
    """Metrics of the work tree; a missing or unreadable file is a GateError."""
    merged: dict[str, float] = {}
    for name in files:
        path = repo / name
        try:
            merged.update(flatten_metrics(json.loads(path.read_text())))
        except FileNotFoundError:
            raise GateError(f"{name}: metrics file not found (run `dvc repro` first)") from None
        except json.JSONDecodeError as exc:
            raise GateError(f"{name}: not valid JSON ({exc})") from None
    return merged


def baseline_metrics(repo: Path, rev: str, files: list[str]) -> tuple[dict[str, float] | None,
                                                                      str]:
    """Metrics committed at ``rev``; ``(None, why)`` when the baseline is missing."""
    if _git(repo, "rev-parse", "--is-inside-work-tree").returncode != 0:
        raise GateError(f"{repo}: not a git repository; the baseline comes from git history")
    if _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        return None, (f"baseline revision {rev!r} not found (first commit, shallow clone "
                      "or branch not fetched?)")
    merged: dict[str, float] = {}
    prefix = _git(repo, "rev-parse", "--show-prefix").stdout.strip()
    for name in files:
        shown = _git(repo, "show", f"{rev}:{prefix}{name}")
        if shown.returncode != 0:
            return None, f"{name} does not exist at baseline revision {rev!r}"
        try:
            merged.update(flatten_metrics(json.loads(shown.stdout)))
        except json.JSONDecodeError as exc:
            raise GateError(f"{name} at {rev}: not valid JSON ({exc})") from None
    return merged, ""


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


def check(rules: dict[str, MetricRule], current: dict[str, float],
          baseline: dict[str, float] | None, baseline_note: str,
          missing_baseline: str) -> list[Row]:
    """Evaluate every bound of every rule into table rows."""
    missing = sorted(m for m in rules if m not in current)
    if missing:
        known = ", ".join(sorted(current)) or "none"
        raise GateError(f"metric(s) {', '.join(missing)} named in gates.rules not in the "
                        f"metrics files (found: {known})")
    rows: list[Row] = []
    for metric, rule in rules.items():
        value = current[metric]
        base = baseline.get(metric) if baseline is not None else None
        delta = value - base if base is not None else None
        if rule.min is not None:
            rows.append(Row(metric, f">= {rule.min:g}", value, base, delta,
                            "PASS" if value >= rule.min else "FAIL"))
        if rule.max is not None:
            rows.append(Row(metric, f"<= {rule.max:g}", value, base, delta,
                            "PASS" if value <= rule.max else "FAIL"))
        for bound, sign, word in ((rule.max_drop, -1, "drop"), (rule.max_rise, 1, "rise")):
            if bound is None:
                continue
            text = f"{word} <= {bound:g}" + (" (relative)" if rule.relative else "")
            if base is None:
                note = baseline_note if baseline is None else \
                    f"{metric} is not in the baseline's metrics"
                verdict = "PASS" if missing_baseline == "pass" else "FAIL"
                rows.append(Row(metric, text, value, None, None, verdict,
                                f"no baseline: {note} (missing_baseline: {missing_baseline})"))
                continue
            allowed = bound * abs(base) if rule.relative else bound
            change = sign * (value - base)  # positive = moved the bad way
            rows.append(Row(metric, text, value, base, delta,
                            "PASS" if change <= allowed + 1e-12 else "FAIL"))
    return rows


HEADER = ("metric", "rule", "value", "baseline", "delta", "result")


def _cells(r: Row) -> tuple[str, ...]:
    delta = "—" if r.delta is None else f"{r.delta:+.6g}"
    return (r.metric, r.rule, _fmt(r.value), _fmt(r.baseline), delta, r.verdict)


def text_table(rows: list[Row]) -> str:
    """Aligned plain-text table for the terminal."""
    cells = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEADER))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"note: {r.metric} {r.rule}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + notes)


def markdown(rows: list[Row], title: str, verdict: str) -> str:
    """A Markdown report for ``$GITHUB_STEP_SUMMARY`` or a PR comment."""
    icon = {"PASS": "✅", "FAIL": "❌"}
    out = [f"## {title}: {icon.get(verdict, '')} {verdict}", "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        c = list(_cells(r))
        c[-1] = f"{icon.get(r.verdict, '')} {r.verdict}"
        out.append("| " + " | ".join(c) + " |")
    failed = [r for r in rows if r.verdict == "FAIL"]
    if failed:
        out += ["", "**Failed:** " + "; ".join(
            f"`{r.metric}` {r.rule}: {_fmt(r.value)}"
            + (f" vs baseline {_fmt(r.baseline)}" if r.baseline is not None else "")
            for r in failed)]
    notes = [f"- `{r.metric}` {r.rule}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def run_gate(repo: Path, gates: GatesConfig, task: str, baseline_rev: str | None,
             missing_baseline: str) -> tuple[list[Row], str]:
    """Evaluate the gate; return the rows and a one-line description of the baseline."""
    rules = gates.rules.get(task, {})
    if not rules:
        raise GateError(f"gates.rules.{task} is empty: nothing to check for a {task} model")
    current = current_metrics(repo, gates.metrics_files)
    baseline: dict[str, float] | None = None
    note = "no baseline (regression rules skipped)"
    if baseline_rev:
        baseline, why = baseline_metrics(repo, baseline_rev, gates.metrics_files)
        note = f"baseline {baseline_rev}" if baseline is not None else why
    elif any(r.max_drop is not None or r.max_rise is not None for r in rules.values()):
        rules = {m: r.model_copy(update={"max_drop": None, "max_rise": None})
                 for m, r in rules.items()}
        rules = {m: r for m, r in rules.items() if r.min is not None or r.max is not None}
    return check(rules, current, baseline, note, missing_baseline), note


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="litpipe gate", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="file with the gates: section")
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository root")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--baseline", help="git revision to compare with (default: gates.baseline)")
    group.add_argument("--no-baseline", action="store_true", help="skip regression rules")
    parser.add_argument("--missing-baseline", choices=("pass", "fail"),
                        help="verdict when the baseline is missing (default: from params)")
    parser.add_argument("--markdown", type=Path, help="also write a Markdown report here")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.repo / args.params)
        gates = params.gates
        rev = None if args.no_baseline else (args.baseline or gates.baseline)
        policy = args.missing_baseline or gates.missing_baseline
        rows, note = run_gate(args.repo, gates, params.model.task, rev, policy)
    except (GateError, ParamsError) as exc:
        print(f"litpipe gate: cannot evaluate: {exc}", file=sys.stderr)
        return 2
    verdict = "FAIL" if any(r.verdict == "FAIL" for r in rows) else "PASS"
    print(f"litpipe gate ({params.model.task}; {note}):")
    print(text_table(rows))
    print(f"result: {verdict}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        with args.markdown.open("a") as fh:  # append: $GITHUB_STEP_SUMMARY may hold more
            fh.write(markdown(rows, f"Metric gate ({note})", verdict))
    return 1 if verdict == "FAIL" else 0
