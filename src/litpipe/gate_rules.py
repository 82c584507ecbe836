"""Typed rules of the ``gates:`` section of ``params.yaml`` (torch-free, import-cheap).

Kept apart from :mod:`litpipe.gates` so that :mod:`litpipe.config` can validate the section
at every stage without importing the gate's reporting code.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["classification", "reconstruction"]

# What the evaluate stage writes to reports/metrics.json for each task (flattened keys;
# per_class_acc is a mapping, so rules may name per_class_acc.<class>).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("test_acc", "test_macro_f1", "test_loss", "per_class_acc"),
    "reconstruction": ("test_mse", "test_mae"),
}
# Metrics that are mappings, not numbers: a rule must name one entry (per_class_acc.Bag).
MAPPING_METRICS = frozenset({"per_class_acc"})


class MetricRule(BaseModel):
    """Bounds on one metric: absolute (``min``/``max``) and against the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float | None = None
    max: float | None = None
    max_drop: float | None = Field(
        None, ge=0.0, description="largest allowed fall below the baseline value"
    )
    max_rise: float | None = Field(
        None, ge=0.0, description="largest allowed rise above the baseline (for losses)"
    )
    relative: bool = Field(False, description="max_drop/max_rise as a fraction of baseline")

    @model_validator(mode="after")
    def _some_bound(self) -> MetricRule:
        if all(v is None for v in (self.min, self.max, self.max_drop, self.max_rise)):
            raise ValueError("a rule needs at least one of min, max, max_drop, max_rise")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.relative and self.max_drop is None and self.max_rise is None:
            # relative only scales max_drop/max_rise; alone it would silently do nothing.
            raise ValueError("relative: true needs max_drop or max_rise (it scales them by "
                             "the baseline value; min/max are always absolute)")
        return self


class GatesConfig(BaseModel):
    """Which metrics files to read, which baseline to compare with, and the rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics_files: list[str] = Field(default=["reports/metrics.json"], min_length=1)
    baseline: str | None = Field("main", description="git revision; null: no regression rules")
    missing_baseline: Literal["pass", "fail"] = Field(
        "pass", description="verdict when the baseline revision or its metrics are absent"
    )
    rules: dict[Task, dict[str, MetricRule]] = Field(
        default_factory=dict,
        description="per task (classification, reconstruction): metric name -> bounds; the "
        "gate applies the section of the trained model's task",
    )

    @model_validator(mode="after")
    def _paths_and_revision(self) -> GatesConfig:
        # Metrics files are read from the work tree *and* from git at the baseline revision,
        # so they must be paths inside the repository, relative to its root.
        for name in self.metrics_files:
            parts = PurePosixPath(name).parts
            if not name or name.startswith("/") or ".." in parts:
                raise ValueError(f"gates.metrics_files: {name!r} must be a path relative to "
                                 "the repository root, inside it")
        rev = self.baseline
        if rev is not None and (not rev or rev.startswith("-") or any(c.isspace() for c in rev)):
            raise ValueError(f"gates.baseline: {rev!r} is not a git revision (use null for "
                             "no baseline)")
        return self

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> GatesConfig:
        for task, rules in self.rules.items():
            for metric in rules:
                if metric in MAPPING_METRICS:
                    raise ValueError(
                        f"gates.rules.{task}.{metric}: {metric!r} is a mapping per class; "
                        f"name one entry, e.g. {metric}.<class name>")
                if not metric_belongs(metric, task):
                    raise ValueError(
                        f"gates.rules.{task}.{metric}: {task} models do not report "
                        f"{metric!r}; they report {', '.join(TASK_METRICS[task])}")
        return self


def metric_belongs(metric: str, task: str) -> bool:
    """Whether ``metric`` (a flattened key of metrics.json) is one ``task`` produces."""
    return any(metric == m or metric.startswith(m + ".") for m in TASK_METRICS[task])
