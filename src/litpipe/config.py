"""Typed, validated view of ``params.yaml``.

Every stage calls :func:`load_params` first thing, before importing torch or lightning, so
that a typo in ``params.yaml`` costs a fraction of a second instead of an hour of training.
Unknown keys are errors (``extra="forbid"``): a misspelt knob that silently does nothing is
worse than a crash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from litpipe.gate_rules import TASK_METRICS, GatesConfig

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


ModelName = Literal["cnn", "mlp", "cifar_cnn", "autoencoder"]
RECONSTRUCTION_MODELS = ("autoencoder",)


class ModelConfig(_Strict):
    name: ModelName = "cnn"
    channels: list[int] = Field(default=[32, 64], min_length=1, max_length=4,
                                description="conv block widths (cnn)")
    hidden: list[int] = Field(default=[128], min_length=1, max_length=4,
                              description="fully-connected sizes (cnn, mlp, cifar_cnn, "
                              "autoencoder encoder)")
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    latent_dim: int = Field(16, ge=1, le=4096, description="autoencoder code size")

    @property
    def task(self) -> Literal["classification", "reconstruction"]:
        """What the model learns; decides the metrics evaluate writes."""
        return "reconstruction" if self.name in RECONSTRUCTION_MODELS else "classification"

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
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    mode: Literal["min", "max"] = "min"


class SWAConfig(_Strict):
    """Stochastic Weight Averaging (Lightning's StochasticWeightAveraging callback)."""

    enabled: bool = False
    lrs: float = Field(0.01, gt=0.0, description="SWA learning rate")
    epoch_start: float | int = Field(0.8, gt=0, description="fraction of epochs or an epoch")
    annealing_epochs: int = Field(2, ge=1)


class TunerConfig(_Strict):
    """Bounds for Lightning's learning-rate and batch-size finders (lr/batch_size: auto)."""

    min_lr: float = Field(1e-6, gt=0.0)
    max_lr: float = Field(1.0, gt=0.0)
    num_training: int = Field(50, ge=10, description="lr finder steps")
    max_batch_size: int = Field(1024, ge=2, description="batch-size finder upper bound")
    steps_per_trial: int = Field(3, ge=1)


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: Annotated[int, Field(ge=1, le=65_536)] | Literal["auto"] = Field(
        128, description="a number, or auto: Lightning's batch-size finder")
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] | Literal["auto"] = Field(
        0.002, description="a number, or auto: Lightning's learning-rate finder")
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    scheduler: Literal["none", "step", "cosine", "onecycle"] = "onecycle"
    step_size: int = Field(5, ge=1, description="epochs per decay, scheduler=step")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor, scheduler=step")
    augment: bool = Field(True, description="random shifts (and flips for cifar10)")
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    swa: SWAConfig = SWAConfig()
    tuner: TunerConfig = TunerConfig()
    accumulate_grad_batches: int = Field(1, ge=1, le=1024)
    gradient_clip_val: float | None = Field(None, gt=0.0, description="null: no clipping")
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "auto"] = "cpu"
    devices: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = 1
    strategy: Literal["auto", "ddp", "ddp_spawn", "single_device"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    num_workers: int = Field(0, ge=0, le=64)
    fast_dev_run: bool | Annotated[int, Field(ge=0)] = False
    limit_train_batches: Annotated[float, Field(gt=0.0, le=1.0)] | Annotated[int, Field(ge=1)] \
        = 1.0
    limit_val_batches: Annotated[float, Field(gt=0.0, le=1.0)] | Annotated[int, Field(ge=1)] \
        = 1.0
    profiler: Literal["none", "simple", "advanced"] = "none"
    val_image_samples: int = Field(16, ge=0, le=64, description="images in the per-epoch "
                                   "validation prediction grid logged to MLflow; 0: off")
    resume_from: str | None = Field(None, description="checkpoint to continue training from")
    progress_bar: bool = True

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        gpu = self.accelerator in ("gpu", "cuda")
        if self.precision == "16-mixed" and not gpu:
            raise ValueError(
                f"precision '16-mixed' needs a CUDA GPU (train.accelerator is "
                f"'{self.accelerator}'); on CPU use 'bf16-mixed' or '32-true'")
        multi = self.devices == "auto" or (isinstance(self.devices, int) and self.devices > 1)
        if self.batch_size == "auto" and (multi or self.strategy.startswith("ddp")):
            raise ValueError("batch_size 'auto' (Lightning's batch-size finder) does not "
                             "support multi-device training; set a number")
        if self.lr == "auto" and (multi or self.strategy.startswith("ddp")):
            raise ValueError("lr 'auto' (Lightning's learning-rate finder) does not support "
                             "multi-device training; set a number")
        return self


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


def _check_task(params: Params) -> None:
    """Reject combinations that only fail (or silently mislead) after hours of training."""
    if params.model.task == "reconstruction":
        for where, monitor in (("train.checkpoint.monitor", params.train.checkpoint.monitor),
                               ("train.early_stopping.monitor",
                                params.train.early_stopping.monitor)):
            if monitor != "val_loss":
                raise ValueError(f"{where} = '{monitor}', but model.name = "
                                 f"'{params.model.name}' is a reconstruction model with no "
                                 "accuracy; monitor 'val_loss'")
    rules = params.gates.rules
    if rules and params.model.task not in rules:
        # The gate would refuse this model (exit 2) only after training, evaluation, export.
        raise ValueError(
            f"model.name = '{params.model.name}' is a {params.model.task} model, but "
            f"gates.rules has rules only for {', '.join(sorted(rules))}; add "
            f"gates.rules.{params.model.task} (its metrics: "
            f"{', '.join(TASK_METRICS[params.model.task])}) so CI can gate it")
    if params.model.name == "cifar_cnn" and params.data.dataset == "digits":
        raise ValueError("model.name = 'cifar_cnn' needs images of at least 16×16 (its four "
                         "3×3 convolutions and two poolings); data.dataset = 'digits' is 8×8")


class Params(_Strict):
    seed: int = Field(42, ge=0, le=2**32 - 1)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    tracking: TrackingConfig = TrackingConfig()
    gates: GatesConfig = GatesConfig()

    @model_validator(mode="after")
    def _cross_section(self) -> Params:
        _check_task(self)
        return self


class ParamsError(ValueError):
    """``params.yaml`` is missing, unreadable or invalid; the message says where and why."""


_UNION_TAG = re.compile(r"^(int|float|bool|str|none|constrained-\w+|[\w-]+\[.*\])$")


def _format_errors(err: ValidationError, source: Path) -> str:
    """One line per bad key: ``path = value: what is allowed``.

    Union alternatives (``lr: 0.01 | auto``) are merged into one line, and pydantic's
    internal tags (``constrained-float``, ``literal['auto']``) are dropped from the path.
    """
    grouped: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not _UNION_TAG.match(str(p))) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README 'Params')"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if not isinstance(e.get("input"), dict | list):
                values[loc] = e.get("input")
        if msg not in grouped.setdefault(loc, []):
            grouped[loc].append(msg)
    lines = [f"{source}: {len(grouped)} invalid value(s):"]
    for loc, msgs in grouped.items():
        shown = f" = {values[loc]!r}" if loc in values else ""
        lines.append(f"  - {loc}{shown}: {' or '.join(msgs)}")
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
