"""The gate's verdict: metrics from the work tree and from git, checked against the rules.

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

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from litpipe.errors import LitpipeError
from litpipe.formats import flatten
from litpipe.repo import git
from litpipe.schema import (
    MAPPING_METRICS,
    TASK_METRICS,
    GatesConfig,
    MetricRule,
    is_revision,
)


class GateError(LitpipeError):
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


def flatten_metrics(obj: Any) -> dict[str, float]:
    """Nested metrics JSON → ``{"per_class_acc.Bag": 0.99, ...}`` (numbers only).

    Booleans and strings are not metrics; leaving them out makes a rule naming one a
    "missing metric" (exit 2) instead of a comparison of apples with ``True``.
    """
    return {k: float(v) for k, v in flatten(obj).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object that gives a key twice is refused: which value counts would be a guess
    (Python keeps the last, other readers the first)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise GateError(f"key {key!r} appears twice ({seen[key]!r} and {value!r})")
        seen[key] = value
    return seen


def _parse(text: str, source: str) -> dict[str, float]:
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise GateError(f"{source}: not valid JSON ({exc})") from None
    except GateError as exc:
        raise GateError(f"{source}: {exc}") from None
    if not isinstance(data, dict):
        raise GateError(f"{source}: expected a JSON object of metrics, got "
                        f"{type(data).__name__}")
    return flatten_metrics(data)


def _domain(metric: str) -> tuple[float, float]:
    """The values ``metric`` can take: accuracies and F1 scores are fractions, losses and
    errors are never negative (by the last part of its name: ``per_class_acc.Bag``)."""
    leaf = metric.rsplit(".", 1)[0] if metric.startswith(tuple(MAPPING_METRICS)) else metric
    if leaf.endswith(("_acc", "_f1")):
        return 0.0, 1.0
    return 0.0, math.inf  # test_loss, test_mse, test_mae


def check_values(metrics: dict[str, float], task: str, source: str) -> None:
    """Every value is one a model can have, before any rule looks at it: finite, inside its
    metric's domain, and every metric of the task present. A GateError (exit 2) names the
    key and the value otherwise: a gate must not pass what no model could have scored."""
    for metric, value in metrics.items():
        low, high = _domain(metric)
        if not math.isfinite(value):
            raise GateError(f"{source}: {metric} = {value}: not a finite number")
        if not low <= value <= high:
            allowed = f"[{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
            raise GateError(f"{source}: {metric} = {value!r}: outside {allowed}")
    for expected in TASK_METRICS[task]:
        if not any(m == expected or m.startswith(expected + ".") for m in metrics):
            raise GateError(f"{source}: {expected} is missing; a {task} model's metrics hold "
                            f"{', '.join(TASK_METRICS[task])} (run `dvc repro`)")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return git(repo, *args)
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
    if not is_revision(rev):
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


def verdict_of(rows: list[Row]) -> str:
    """FAIL when any row fails; SKIP rows do not count either way."""
    return "FAIL" if any(r.verdict == "FAIL" for r in rows) else "PASS"


def baseline_dataset(repo: Path, rev: str, params_file: str) -> str | None:
    """``data.dataset`` of ``params_file`` as committed at ``rev``, or None if unknown.

    Read as plain YAML, not validated: an older revision's params may not fit today's
    schema, and only this one key is needed.
    """
    if Path(params_file).is_absolute() or ".." in Path(params_file).parts:
        return None
    prefix = _git(repo, "rev-parse", "--show-prefix").stdout.strip()
    shown = _git(repo, "show", f"{rev}:{prefix}{params_file}")
    if shown.returncode != 0:
        return None
    try:
        data = yaml.safe_load(shown.stdout)
    except yaml.YAMLError:
        return None
    section = data.get("data") if isinstance(data, dict) else None
    dataset = section.get("dataset") if isinstance(section, dict) else None
    return dataset if isinstance(dataset, str) else None


def run_gate(repo: Path, gates: GatesConfig, task: str, baseline_rev: str | None,
             policy: str, dataset: str | None = None, params_file: str | None = None
             ) -> tuple[list[Row], str]:
    """Evaluate the gate; return the rows and a one-line description of the rules applied
    and of the baseline.

    ``dataset`` (the trained model's ``data.dataset``) picks ``gates.dataset_rules`` over
    ``gates.rules`` where it has rules for this task. A baseline whose ``params_file`` at
    its revision names another dataset is treated as missing: the regression rules compare
    like with like, and a CIFAR-10 accuracy is no regression from a Fashion-MNIST one.
    """
    if dataset is None:
        source, rules = f"gates.rules.{task}", dict(gates.rules).get(task, {})
        about = f"rules {source}"
    else:
        source, rules = gates.rules_for(dataset, task)
        about = f"data {dataset}, rules {source}"
    if not rules:
        raise GateError(f"{source} is empty: nothing to check for a {task} model")
    current = current_metrics(repo, gates.metrics_files)
    check_values(current, task, " + ".join(gates.metrics_files))
    if not baseline_rev:
        return (check(rules, current, None, policy),
                f"{about}; no baseline (regression rules skipped)")
    baseline = baseline_metrics(repo, baseline_rev, gates.metrics_files)
    if dataset is not None and params_file is not None and baseline.metrics is not None:
        theirs = baseline_dataset(repo, baseline_rev, params_file)
        if theirs is not None and theirs != dataset:
            baseline = Baseline(baseline_rev, None,
                                f"baseline {baseline_rev} was trained on {theirs}, this model "
                                f"on {dataset}: not comparable")
    return check(rules, current, baseline, policy), f"{about}; {baseline.description}"
