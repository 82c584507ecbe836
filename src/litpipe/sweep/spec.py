"""``sweep.yaml``: the schema of a sweep, validated like ``params.yaml`` before any work.

Every bad key is one line naming its path and what is allowed (the params file's wording,
:func:`litpipe.params._format_errors`). The search space is checked against ``params.yaml``
itself: each bound and choice is substituted into the params and validated there, so a
sweep cannot propose a value the train stage would refuse after minutes of work. Nothing
here imports torch or optuna, so ``litpipe sweep --check`` answers in well under a second.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from litpipe.params import ParamsError, _format_errors, _read_yaml, load_params


class SweepError(ParamsError):
    """``sweep.yaml`` is missing or invalid, or a sweep cannot go on; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatRange(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self


class Choices(_Strict):
    type: Literal["categorical"]
    # Optuna stores categorical values as they are: scalars only (a list would not round-trip).
    choices: list[str | int | float | bool | None] = Field(min_length=1)


Dimension = Annotated[FloatRange | IntRange | Choices, Field(discriminator="type")]

# The last validation epoch's value (reports/train_history.csv), or a key of the evaluate
# stage's reports/metrics.json. Validation metrics are the default: choosing hyperparameters
# by the test set would leak it into the model.
VAL_METRICS = {"val_loss": "minimize", "val_acc": "maximize"}
TEST_METRIC = re.compile(r"^(test_(acc|loss|macro_f1|mse)|per_class_acc\.\d+)$")


class Objective(_Strict):
    metric: str
    direction: Literal["minimize", "maximize"]

    @model_validator(mode="after")
    def _known(self) -> Objective:
        if self.metric not in VAL_METRICS and not TEST_METRIC.match(self.metric):
            raise ValueError(f"metric {self.metric!r}: use val_loss | val_acc (the last "
                             "validation epoch) or a key of reports/metrics.json (test_acc, "
                             "test_loss, test_macro_f1, test_mse, per_class_acc.N)")
        return self

    @property
    def from_validation(self) -> bool:
        return self.metric in VAL_METRICS


class Sampler(_Strict):
    name: Literal["tpe", "random"]
    seed: int | None


class Pruner(_Strict):
    name: Literal["none", "median", "hyperband"]
    monitor: Literal["val_loss", "val_acc"]  # reported every epoch, in the study's direction
    startup_trials: int = Field(ge=0)  # median: trials finished before any is pruned
    warmup_epochs: int = Field(ge=0)  # median: epochs a trial runs before it can be pruned


class Heartbeat(_Strict):
    interval: int = Field(ge=1)  # seconds between a running trial's heartbeats
    grace: int = Field(ge=2)  # seconds without one before the trial is taken for dead
    max_retry: int = Field(ge=0)  # times a dead worker's trial is run again


class Sweep(_Strict):
    study: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")  # also the DVC experiments' prefix
    storage: str | None  # null: SQLite in .litpipe/sweep.db; $LITPIPE_SWEEP_STORAGE wins
    params: str  # the params file the space is checked against
    trials: int = Field(ge=1)  # finished (COMPLETE or PRUNED) trials the study ends with
    objective: Objective
    sampler: Sampler
    pruner: Pruner
    heartbeat: Heartbeat
    space: dict[str, Dimension] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Sweep:
        if self.storage and re.search(r"://[^/@]*:[^/@]*@", self.storage):
            raise ValueError("storage: a password does not belong in sweep.yaml (it is "
                             "committed); put the URL in $LITPIPE_SWEEP_STORAGE")
        if self.pruner.name != "none" \
                and VAL_METRICS[self.pruner.monitor] != self.objective.direction:
            raise ValueError(f"pruner.monitor {self.pruner.monitor} is compared in the "
                             f"study's direction ({self.objective.direction}): use "
                             + next(k for k, d in VAL_METRICS.items()
                                    if d == self.objective.direction))
        if self.heartbeat.grace <= self.heartbeat.interval:
            raise ValueError("heartbeat.grace must exceed heartbeat.interval")
        return self

    @property
    def target(self) -> str:
        """The last DVC stage a trial needs: train for a validation metric, else evaluate."""
        return "train" if self.objective.from_validation else "evaluate"


# Keys a sweep may not vary: every trial must track to one MLflow experiment and store.
FIXED_SECTIONS = ("tracking.", "gates.")


def _space_errors(sweep: Sweep, root: Path) -> list[str]:
    """One line per space key or bound that params.yaml would refuse."""
    params_path = root / sweep.params
    load_params(params_path)  # the params themselves first: their own errors, their wording
    lines = []
    for key, dim in sweep.space.items():
        if key.startswith(FIXED_SECTIONS):
            lines.append(f"  - space.{key}: not sweepable (every trial shares "
                         f"{key.split('.')[0]})")
            continue
        values = dim.choices if isinstance(dim, Choices) else [dim.low, dim.high]
        for value in values:
            try:
                load_params(params_path, overrides={key: value})
            except ParamsError as exc:
                why = [ln.strip()[2:] for ln in str(exc).splitlines()[1:]]
                lines.append(f"  - space.{key} = {value!r}: {params_path.name} refuses it: "
                             + "; ".join(why))
                break
    return lines


def load_sweep(path: str | Path = "sweep.yaml", root: Path | None = None) -> Sweep:
    """Read and validate ``path``; raise :class:`SweepError` naming every bad key."""
    path = Path(path)
    root = root or path.resolve().parent
    try:
        raw = _read_yaml(path)
    except ParamsError as exc:
        raise SweepError(str(exc)) from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: must be a mapping (study, trials, objective, space, ...)")
    try:
        sweep = Sweep.model_validate(raw)
    except ValidationError as exc:
        raise SweepError(_format_errors(exc, path).replace(
            "every knob must be set in params.yaml", "every key must be set in sweep.yaml")
        ) from None
    lines = _space_errors(sweep, root)
    if lines:
        raise SweepError("\n".join([f"{path}: {len(lines)} invalid value(s):", *lines]))
    return sweep


def cli_value(value: Any) -> str:
    """``value`` as ``dvc exp run -S key=VALUE`` reads it back unchanged (YAML)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = repr(value)  # shortest exact form; YAML 1.1 reads "1e-06" as a string:
        mantissa, e, exponent = text.partition("e")  # give the mantissa a point
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return str(value)
