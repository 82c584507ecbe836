"""Typed, validated view of ``params.yaml``.

Every stage calls :func:`load_params` first thing, before importing torch or lightning, so
that a typo in ``params.yaml`` costs a fraction of a second instead of an hour of training.
Unknown keys are errors (``extra="forbid"``): a misspelt knob that silently does nothing is
worse than a crash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from litpipe.gate_rules import GatesConfig

DatasetName = Literal["fashion_mnist", "mnist", "cifar10", "digits"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    dataset: DatasetName = "fashion_mnist"
    mirrors: dict[DatasetName, list[str]] = Field(
        default_factory=dict,
        description="Mirrors per dataset, tried in order: file://, http(s):// URLs or paths.",
    )
    digests: dict[str, str] = Field(
        default_factory=dict,
        description="Override of expected digests, keyed by remote file name "
        "('sha256:<hex>' of decompressed content or 'md5:<hex>' of the archive).",
    )
    timeout: float = Field(30.0, gt=0, le=600, description="connect/read timeout, seconds")
    retries: int = Field(2, ge=0, le=10, description="extra attempts per mirror")
    val_size: int = Field(5000, ge=1)
    train_size: int | None = Field(None, ge=1, description="cap on training samples")
    test_size: int | None = Field(None, ge=1, description="cap on test samples")


class ModelConfig(_Strict):
    name: Literal["cnn", "mlp"] = "cnn"
    channels: list[int] = Field(default=[32, 64], min_length=1, max_length=4)
    hidden: list[int] = Field(default=[128], min_length=1, max_length=4)
    dropout: float = Field(0.25, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _positive_sizes(self) -> ModelConfig:
        for key in ("channels", "hidden"):
            if any(v < 1 for v in getattr(self, key)):
                raise ValueError(f"model.{key}: every size must be >= 1")
        return self


class EarlyStoppingConfig(_Strict):
    enabled: bool = True
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0.0)


class CheckpointConfig(_Strict):
    monitor: Literal["val_loss", "val_acc"] = "val_acc"
    mode: Literal["min", "max"] = "max"


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(0.002, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    scheduler: Literal["none", "step", "cosine", "onecycle"] = "onecycle"
    step_size: int = Field(5, ge=1, description="epochs per decay, scheduler=step")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor, scheduler=step")
    augment: bool = Field(True, description="random shifts (and flips for cifar10)")
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "auto"] = "cpu"
    devices: int | Literal["auto"] = 1
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    num_workers: int = Field(0, ge=0, le=64)
    limit_train_batches: float | int = Field(1.0, gt=0)
    limit_val_batches: float | int = Field(1.0, gt=0)
    progress_bar: bool = True


class EvaluateConfig(_Strict):
    batch_size: int = Field(1000, ge=1)
    samples: int = Field(36, ge=1, le=256, description="images in reports/samples.png")


class ExportConfig(_Strict):
    opset: int = Field(18, ge=13, le=23)
    tolerance: float = Field(1e-4, gt=0.0)
    parity_batch: int = Field(64, ge=1)
    registered_model: str = Field("litpipe-classifier", min_length=1)


class TrackingConfig(_Strict):
    uri: str | None = Field(
        None, description="MLflow tracking URI; null: sqlite DB at the repo root. "
        "The MLFLOW_TRACKING_URI environment variable wins over both."
    )
    experiment: str = Field("litpipe", min_length=1)


class Params(_Strict):
    seed: int = Field(42, ge=0, le=2**32 - 1)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    tracking: TrackingConfig = TrackingConfig()
    gates: GatesConfig = GatesConfig()


class ParamsError(ValueError):
    """``params.yaml`` is missing, unreadable or invalid; the message says where and why."""


def _format_errors(err: ValidationError, source: Path) -> str:
    lines = [f"{source}: {err.error_count()} invalid value(s):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {loc}: unknown key (check the spelling; see README 'Params')")
            continue
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  - {loc} = {shown}: {e['msg']}")
    return "\n".join(lines)


def find_repo_root(start: Path | None = None) -> Path:
    """The repository root: ``$DVC_ROOT`` when DVC runs us, else the nearest parent holding
    ``dvc.yaml``.

    ``dvc exp run --queue`` runs stages in a temporary copy of the repo; ``DVC_ROOT`` then
    names the real one, which is where things that outlive the experiment (the MLflow DB)
    belong.
    """
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "dvc.yaml").exists() or (p / ".dvc").is_dir():
            return p
    return here


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None
                ) -> Params:
    """Read and validate ``path``; raise :class:`ParamsError` naming every bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: not found (run from the repository root)") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, path)) from None


def flatten(params: Params) -> dict[str, Any]:
    """``{"train.lr": 0.002, ...}``: the whole config as MLflow params (lists as strings)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", params.model_dump(mode="json"))
    return out
