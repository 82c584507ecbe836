"""``litpipe gate``: fail a build when metrics fall below bounds or regress against a baseline.

The rules come from ``gates:`` in ``params.yaml`` (the section for the trained model's task).
Current values come from the metrics files in the work tree; baseline values from git
(``git show REV:reports/metrics.json``, as ``dvc metrics diff`` does), never from a rerun:
a gate that retrained the baseline would be slow and would compare against a different
model than the one that was reviewed and merged.

Exit codes: 0 every rule passes, 1 a rule fails (a missing baseline fails only under
``missing_baseline: fail``), 2 the gate cannot be evaluated (missing metric or file, bad
params or rule, bad revision spec, no git). Imports neither torch nor lightning nor mlflow:
CI calls it on every pull request and it answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litpipe.config import ParamsError, load_params
from litpipe.gate_rules import GatesConfig, MetricRule

ICON = {"PASS": "✅", "FAIL": "❌", "SKIP": "➖"}
HEADER = ("metric", "rule", "value", "baseline", "delta", "result")


class GateError(Exception):
    """The gate cannot be evaluated; exit code 2."""


@dataclass(frozen=True)
class Row:
    """One checked bound: what was compared, and the verdict."""

    metric: str
    rule: str
    value: float | None
    baseline: float | None
    delta: float | None
    verdict: str  # PASS | FAIL | SKIP
    note: str = ""


@dataclass(frozen=True)
class Baseline:
    """The baseline's metrics, or why there are none (``metrics is None``)."""

    rev: str | None
    metrics: dict[str, float] | None
    description: str  # "baseline main (2fcfc4d)" or why it is missing


def flatten_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    """Nested metrics JSON → ``{"per_class_acc.Bag": 0.99, ...}`` (numbers only).

    Booleans and strings are not metrics; leaving them out makes a rule naming one a
    "missing metric" (exit 2) instead of a comparison of apples with ``True``.
    """
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_metrics(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def _parse(text: str, source: str) -> dict[str, float]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GateError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise GateError(f"{source}: expected a JSON object of metrics, got "
                        f"{type(data).__name__}")
    return flatten_metrics(data)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=60)
    except FileNotFoundError:
        raise GateError("git is not installed (or not on PATH); the baseline's metrics come "
                        "from git history") from None
    except subprocess.TimeoutExpired:
        raise GateError(f"`git {' '.join(args)}` did not answer within 60 s") from None


def current_metrics(repo: Path, files: list[str]) -> dict[str, float]:
    """Metrics of the work tree; a missing or unreadable file is a GateError."""
    merged: dict[str, float] = {}
    for name in files:
        try:
            text = (repo / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GateError(f"{name}: metrics file not found in {repo} (run `dvc repro` "
                            "first)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GateError(f"{name}: cannot read metrics file ({exc})") from None
        merged.update(_parse(text, name))
    return merged


def baseline_metrics(repo: Path, rev: str, files: list[str]) -> Baseline:
    """Metrics committed at ``rev``, read with ``git show``.

    A revision that does not exist here (first commit, shallow clone, branch not fetched) or
    that lacks a metrics file is a *missing* baseline, for the policy to judge; not being in
    a git repository at all, or a revision that is not one, is an error.
    """
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise GateError(f"baseline {rev!r} is not a git revision")
    inside = _git(repo, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0:
        raise GateError(f"{repo}: not a git repository ({inside.stderr.strip()}); the "
                        "baseline's metrics come from git history (or pass --no-baseline)")
    resolved = _git(repo, "rev-parse", "--verify", "--quiet", "--short", f"{rev}^{{commit}}")
    if resolved.returncode != 0:
        return Baseline(rev, None, f"baseline revision {rev!r} not found (first commit, "
                                   "shallow clone or branch not fetched?)")
    prefix = _git(repo, "rev-parse", "--show-prefix").stdout.strip()
    merged: dict[str, float] = {}
    for name in files:
        shown = _git(repo, "show", f"{rev}:{prefix}{name}")
        if shown.returncode != 0:
            return Baseline(rev, None, f"{name} does not exist at baseline revision {rev!r}")
        merged.update(_parse(shown.stdout, f"{name} at {rev}"))
    return Baseline(rev, merged, f"baseline {rev} ({resolved.stdout.strip()})")


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


def _regression_rows(metric: str, rule: MetricRule, value: float, baseline: Baseline | None,
                     policy: str) -> list[Row]:
    """Rows for ``max_drop``/``max_rise``: against the baseline, or why they were not."""
    rows: list[Row] = []
    for bound, sign, word in ((rule.max_drop, -1, "drop"), (rule.max_rise, 1, "rise")):
        if bound is None:
            continue
        text = f"{word} <= {bound:g}" + (" (relative)" if rule.relative else "")
        if baseline is None:
            rows.append(Row(metric, text, value, None, None, "SKIP"))  # heading says why
            continue
        base = baseline.metrics.get(metric) if baseline.metrics is not None else None
        if base is None:
            why = baseline.description if baseline.metrics is None else \
                f"{metric} is not in the metrics at baseline {baseline.rev!r}"
            rows.append(Row(metric, text, value, None, None, "PASS" if policy == "pass"
                            else "FAIL", f"baseline missing: {why} (missing_baseline: {policy})"))
            continue
        allowed = bound * abs(base) if rule.relative else bound
        change = sign * (value - base)  # positive: moved the bad way
        ok = change <= allowed + 1e-12  # NaN compares False: a NaN never passes
        note = "value or baseline is NaN" if math.isnan(change) else ""
        rows.append(Row(metric, text, value, base, value - base, "PASS" if ok else "FAIL",
                        note))
    return rows


def check(rules: dict[str, MetricRule], current: dict[str, float],
          baseline: Baseline | None, policy: str) -> list[Row]:
    """Evaluate every bound of every rule into table rows (``baseline=None``: not asked)."""
    missing = sorted(m for m in rules if m not in current)
    if missing:
        known = ", ".join(sorted(current)) or "none"
        raise GateError(f"metric(s) {', '.join(missing)} named in gates.rules not in the "
                        f"metrics files (found: {known})")
    rows: list[Row] = []
    for metric, rule in rules.items():
        value = current[metric]
        base = baseline.metrics.get(metric) if baseline and baseline.metrics else None
        delta = value - base if base is not None else None
        nan = "value is NaN" if math.isnan(value) else ""
        if rule.min is not None:
            rows.append(Row(metric, f">= {rule.min:g}", value, base, delta,
                            "PASS" if value >= rule.min else "FAIL", nan))
        if rule.max is not None:
            rows.append(Row(metric, f"<= {rule.max:g}", value, base, delta,
                            "PASS" if value <= rule.max else "FAIL", nan))
        rows.extend(_regression_rows(metric, rule, value, baseline, policy))
    return rows


def _cells(r: Row) -> tuple[str, ...]:
    delta = "—" if r.delta is None else f"{r.delta:+.6g}"
    return (r.metric, r.rule, _fmt(r.value), _fmt(r.baseline), delta, r.verdict)


def verdict_of(rows: list[Row]) -> str:
    """FAIL when any row fails; SKIP rows do not count either way."""
    return "FAIL" if any(r.verdict == "FAIL" for r in rows) else "PASS"


def _notes(rows: list[Row]) -> list[tuple[str, list[str]]]:
    """Each distinct note once, with the checks it applies to (a missing baseline explains
    every regression row the same way; saying it once per row buries it)."""
    grouped: dict[str, list[str]] = {}
    for r in rows:
        if r.note:
            grouped.setdefault(r.note, []).append(f"{r.metric} {r.rule}")
    return list(grouped.items())


def text_table(rows: list[Row]) -> str:
    """Aligned plain-text table for the terminal, then one line per note."""
    cells = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEADER))).rstrip()
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"note: {note} [{', '.join(checks)}]" for note, checks in _notes(rows)]
    return "\n".join(lines + notes)


def markdown(rows: list[Row], title: str, baseline_line: str) -> str:
    """A Markdown report for ``$GITHUB_STEP_SUMMARY`` or a PR comment.

    Failures are repeated under the table with both values, so the reason is readable in a
    notification that truncates tables.
    """
    verdict = verdict_of(rows)
    out = [f"## {title}: {ICON[verdict]} {verdict}", "", baseline_line, "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        c = list(_cells(r))
        c[0] = f"`{c[0]}`"
        c[-1] = f"{ICON[r.verdict]} {r.verdict}"
        out.append("| " + " | ".join(c) + " |")
    failed = [r for r in rows if r.verdict == "FAIL"]
    if failed:
        out += ["", "**Failed:** " + "; ".join(
            f"`{r.metric}` {r.rule}: {_fmt(r.value)}"
            + (f" vs baseline {_fmt(r.baseline)}" if r.baseline is not None else "")
            + (f" ({r.note})" if r.note else "")
            for r in failed)]
    notes = [f"- {note} ({', '.join(f'`{c}`' for c in checks)})"
             for note, checks in _notes(rows)]
    if notes:
        out += ["", "Notes:", "", *notes]
    return "\n".join(out) + "\n\n"  # a blank line ends the table before the next report


def run_gate(repo: Path, gates: GatesConfig, task: str, baseline_rev: str | None,
             policy: str) -> tuple[list[Row], str]:
    """Evaluate the gate; return the rows and a one-line description of the baseline."""
    rules = gates.rules.get(task, {})
    if not rules:
        raise GateError(f"gates.rules.{task} is empty: nothing to check for a {task} model")
    current = current_metrics(repo, gates.metrics_files)
    if not baseline_rev:
        return check(rules, current, None, policy), "no baseline (regression rules skipped)"
    baseline = baseline_metrics(repo, baseline_rev, gates.metrics_files)
    return check(rules, current, baseline, policy), baseline.description


def main(argv: list[str]) -> int:
    """``litpipe gate [options]``; returns the exit code (0 pass, 1 fail, 2 cannot evaluate)."""
    parser = argparse.ArgumentParser(prog="litpipe gate", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml",
                        help="params file with the gates: section, relative to --repo "
                        "(default: params.yaml)")
    parser.add_argument("--repo", type=Path, default=Path("."),
                        help="repository root (default: the current directory)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--baseline", metavar="REV",
                       help="git revision to compare with (default: gates.baseline)")
    group.add_argument("--no-baseline", action="store_true",
                       help="skip the regression rules (max_drop/max_rise)")
    parser.add_argument("--missing-baseline", choices=("pass", "fail"),
                        help="verdict when the baseline is missing (default: "
                        "gates.missing_baseline)")
    parser.add_argument("--markdown", type=Path, metavar="PATH",
                        help="also append a Markdown report to PATH (e.g. "
                        "$GITHUB_STEP_SUMMARY)")
    parser.add_argument("--title", default="Metric gate",
                        help="heading of the Markdown report (default: Metric gate)")
    args = parser.parse_args(argv)
    try:
        if not args.repo.is_dir():
            raise GateError(f"--repo {args.repo}: not a directory")
        params = load_params(args.repo / args.params)
        gates = params.gates
        rev = None if args.no_baseline else (args.baseline or gates.baseline)
        policy = args.missing_baseline or gates.missing_baseline
        task = params.model.task
        rows, note = run_gate(args.repo, gates, task, rev, policy)
    except (GateError, ParamsError) as exc:
        print(f"litpipe gate: cannot evaluate: {exc}", file=sys.stderr)
        return 2
    verdict = verdict_of(rows)
    failed = sum(r.verdict == "FAIL" for r in rows)
    print(f"litpipe gate ({task}; {note}):")
    print(text_table(rows))
    print(f"result: {verdict}" + (f" ({failed} of {len(rows)} checks failed)" if failed else ""))
    if args.markdown:
        about = f"Task: {task}; {note}" + (f"; missing baseline: {policy}" if rev else "")
        try:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            with args.markdown.open("a", encoding="utf-8") as fh:  # append: see --help
                fh.write(markdown(rows, args.title, about))
        except OSError as exc:
            print(f"litpipe gate: cannot write {args.markdown}: {exc}", file=sys.stderr)
            return 2
    return 1 if verdict == "FAIL" else 0
