"""The schema of ``params.yaml``: every knob, its type and its allowed range.

Every stage validates the whole file first (:func:`litpipe.params.load_params`), before
importing torch, lightning or mlflow, so a typo costs a fraction of a second instead of an
hour of training. Unknown keys are errors
(``extra="forbid"`` on every section): a misspelt knob that silently does nothing is worse
than a crash. No field has a default: ``params.yaml`` is the only place a value is set, so
a value can never change without DVC seeing the change and rerunning what depends on it.

The sections mirror Lightning's own split (as LightningCLI lays out a config): ``data`` for
the DataModule, ``model`` for the network, ``optimizer``/``scheduler`` for
``configure_optimizers``, ``trainer`` for the keyword arguments of ``lightning.Trainer``,
``callbacks`` and ``tuner`` for what is added around it.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from litpipe.catalog import NETWORKS, OPTIMIZERS, SCHEDULERS, Task

DatasetName = Literal["fashion_mnist", "mnist", "cifar10", "digits"]
# The names come from the catalog's tables (one place per fact); a network's task decides
# the metrics evaluate writes and the gate rules that apply.
ModelName = Literal[tuple(NETWORKS)]  # type: ignore[valid-type]
OptimizerName = Literal[tuple(OPTIMIZERS)]  # type: ignore[valid-type]
SchedulerName = Literal[tuple(SCHEDULERS)]  # type: ignore[valid-type]
# What the evaluate stage writes to reports/metrics.json for each task (flattened keys;
# per_class_acc is a mapping, so rules name per_class_acc.<class>).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("test_acc", "test_macro_f1", "test_loss", "per_class_acc"),
    "reconstruction": ("test_mse", "test_mae"),
}
MAPPING_METRICS = frozenset({"per_class_acc"})
Monitor = Literal["val_loss", "val_acc"]
PositiveFraction = Annotated[float, Field(gt=0.0, le=1.0)]
BatchCount = Annotated[int, Field(ge=1)]


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors, values cannot change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    """download (mirrors, digests, network), split (sizes) and the DataModule (batches)."""

    dataset: DatasetName
    mirrors: dict[DatasetName, list[str]] = Field(
        description="per dataset, tried in order: file://, http(s):// URLs or directories")
    digests: dict[str, str] = Field(
        description="expected digests by remote file name: 'sha256:<hex>' of the "
        "decompressed content or 'md5:<hex>' of the archive")
    timeout: float = Field(gt=0, le=600, description="connect/read timeout, seconds")
    retries: int = Field(ge=0, le=10, description="extra attempts per mirror")
    # An int is a count; a float a fraction of the training set, so that one value fits
    # every dataset (digits has 1,437 training images, Fashion-MNIST 60,000). StrictInt:
    # 5000.0 is refused rather than silently read as a count.
    val_size: Annotated[StrictInt, Field(ge=1)] | Annotated[float, Field(gt=0.0, lt=1.0)] = (
        Field(description="held out of the training set, seeded: a fraction (0 < x < 1) of "
              "it, or a number of samples"))
    train_size: int | None = Field(ge=1, description="cap on training samples; null: all")
    test_size: int | None = Field(ge=1, description="cap on test samples; null: all")
    batch_size: Annotated[int, Field(ge=1, le=65_536)] | Literal["auto"] = Field(
        description="a number, or auto: Lightning's batch-size finder")
    num_workers: int = Field(ge=0, le=64, description="DataLoader worker processes")
    augment: bool = Field(description="random flips (fashion_mnist, cifar10) and shifts "
                          "(data.max_shift) of the training images")
    max_shift: int = Field(ge=0, le=8, description="largest random shift, in pixels, when "
                           "data.augment is on (0: no shifts)")


class ModelConfig(Section):
    """The network: which one, and its sizes."""

    name: ModelName
    channels: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1, max_length=4, description="conv block widths (cnn)")
    convs_per_block: int = Field(ge=1, le=4, description="conv layers per block (cnn)")
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1, max_length=4, description="fully-connected sizes")
    dropout: float = Field(ge=0.0, lt=1.0)
    latent_dim: int = Field(ge=1, le=4096, description="autoencoder code size")
    channels_last: bool = Field(description="NHWC memory format for the convolutional "
                                "networks (faster on most CPUs with oneDNN)")
    label_smoothing: float = Field(ge=0.0, lt=1.0, description="cross-entropy target "
                                   "smoothing while training (classifiers)")
    test_time_flip: bool = Field(description="classifiers answer with the mean of the "
                                 "image's and its mirror's probabilities, wherever they "
                                 "predict (validation, evaluate, the exported models); only "
                                 "for datasets whose augmentation mirrors (fashion_mnist, "
                                 "cifar10), ignored for the others")

    @property
    def task(self) -> Task:
        """What the model learns; decides the metrics evaluate writes."""
        return NETWORKS[self.name].task


class OptimizerConfig(Section):
    name: OptimizerName
    lr: Annotated[float, Field(gt=0.0, le=10.0)] | Literal["auto"] = Field(
        description="a number, or auto: Lightning's learning-rate finder")
    weight_decay: float = Field(ge=0.0)
    momentum: float = Field(ge=0.0, lt=1.0, description="sgd only")


class SchedulerConfig(Section):
    name: SchedulerName
    step_size: int = Field(ge=1, description="epochs per decay (step)")
    gamma: float = Field(gt=0.0, le=1.0, description="decay factor (step)")


class TrainerConfig(Section):
    """Keyword arguments of ``lightning.Trainer``, passed as they are (``profiler`` is turned
    into a profiler that writes its report to a file, so it can go to MLflow)."""

    max_epochs: int = Field(ge=1, le=10_000)
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "auto"]
    devices: Annotated[int, Field(ge=1, le=64)] | Literal["auto"]
    num_nodes: int = Field(ge=1, le=1024, description="machines (each runs `devices` "
                           "processes); see the README for torchrun and SLURM")
    strategy: Literal["auto", "ddp", "ddp_spawn", "single_device"]
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        description="auto: bf16-mixed where the hardware computes bf16 natively (CUDA with "
        "bf16, CPUs with AMX or AVX-512 BF16), else 32-true")
    accumulate_grad_batches: int = Field(ge=1, le=1024)
    gradient_clip_val: float | None = Field(gt=0.0, description="null: no clipping")
    gradient_clip_algorithm: Literal["norm", "value"]
    fast_dev_run: bool | Annotated[int, Field(ge=0)] = Field(
        description="true or N: run N batches as a smoke test")
    limit_train_batches: PositiveFraction | BatchCount
    limit_val_batches: PositiveFraction | BatchCount
    enable_progress_bar: bool
    profiler: Literal["none", "simple", "advanced"]
    logger: Literal["none", "csv"] = Field(
        description="a Lightning logger besides MLflow: csv writes lightning_logs/<run>/ "
        "(every metric the module logs, with its epoch)")

    @model_validator(mode="after")
    def _gpu_only(self) -> TrainerConfig:
        if self.precision == "16-mixed" and self.accelerator not in ("gpu", "cuda"):
            raise ValueError(
                f"precision '16-mixed' needs a CUDA GPU (trainer.accelerator is "
                f"'{self.accelerator}'); on CPU use 'bf16-mixed' or '32-true'")
        return self

    @property
    def multi_device(self) -> bool:
        """More than one training process (the finders cannot run then)."""
        return (self.devices == "auto" or self.devices > 1 or self.num_nodes > 1
                or self.strategy.startswith("ddp"))


class EarlyStoppingConfig(Section):
    enabled: bool
    monitor: Monitor
    mode: Literal["min", "max"]
    patience: int = Field(ge=0)
    min_delta: float = Field(ge=0.0)


class CheckpointConfig(Section):
    """``models/best.ckpt`` is the epoch this metric liked best."""

    monitor: Monitor
    mode: Literal["min", "max"]


class SWAConfig(Section):
    """Stochastic Weight Averaging (Lightning's StochasticWeightAveraging callback)."""

    enabled: bool
    lrs: float = Field(gt=0.0, description="SWA learning rate")
    epoch_start: float | int = Field(gt=0, description="fraction of epochs or an epoch")
    annealing_epochs: int = Field(ge=1)


class CallbacksConfig(Section):
    early_stopping: EarlyStoppingConfig
    checkpoint: CheckpointConfig
    swa: SWAConfig
    val_image_samples: int = Field(ge=0, le=64, description="images in the per-epoch "
                                   "validation prediction grid logged to MLflow; 0: off")
    stop_on_non_finite: bool = Field(description="a NaN or infinite training loss or "
                                     "gradient norm stops training at once, the run FAILED "
                                     "and no model written; false: train on")


class TunerConfig(Section):
    """Bounds of Lightning's learning-rate and batch-size finders (used when set to auto)."""

    min_lr: float = Field(gt=0.0)
    max_lr: float = Field(gt=0.0)
    num_training: int = Field(ge=10, description="lr finder steps")
    max_batch_size: int = Field(ge=2, description="batch-size finder upper bound")
    steps_per_trial: int = Field(ge=1)


class EvaluateConfig(Section):
    batch_size: int = Field(ge=1)
    samples: int = Field(ge=1, le=256, description="images in reports/samples.png")


class ExportConfig(Section):
    opset: int = Field(ge=13, le=23)
    tolerance: float = Field(gt=0.0, description="max abs diff vs PyTorch")
    parity_batch: int = Field(ge=1)
    registered_model: str = Field(min_length=1)


class TrackingConfig(Section):
    uri: str | None = Field(description="MLflow tracking URI; null: SQLite DB at the repo "
                            "root. The MLFLOW_TRACKING_URI environment variable wins.")
    experiment: str = Field(min_length=1)


class MetricRule(Section):
    """Bounds on one metric: absolute (``min``/``max``) and against the baseline."""

    min: float | None = None
    max: float | None = None
    max_drop: float | None = Field(None, ge=0.0, description="largest fall below baseline")
    max_rise: float | None = Field(None, ge=0.0, description="largest rise above baseline")
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


def metric_belongs(metric: str, task: str) -> bool:
    """Whether ``metric`` (a flattened key of metrics.json) is one ``task`` produces."""
    return any(metric == m or metric.startswith(m + ".") for m in TASK_METRICS[task])


def is_revision(rev: str) -> bool:
    """Whether ``rev`` can be handed to git as a revision (not an option, no spaces)."""
    return bool(rev) and not rev.startswith("-") and not any(c.isspace() for c in rev)


TaskRules = dict[Task, dict[str, MetricRule]]


def _check_rules(where: str, rules: TaskRules) -> None:
    """Each rule names a metric its task's models report (``where``: the key path so far)."""
    for task, task_rules in rules.items():
        for metric in task_rules:
            if metric in MAPPING_METRICS:
                raise ValueError(f"{where}.{task}.{metric}: {metric!r} is a mapping per "
                                 f"class; name one entry, e.g. {metric}.<class name>")
            if not metric_belongs(metric, task):
                raise ValueError(f"{where}.{task}.{metric}: {task} models do not report "
                                 f"{metric!r}; they report {', '.join(TASK_METRICS[task])}")


class GatesConfig(Section):
    """Which metrics files to read, which baseline to compare with, and the rules per task.

    What a good model scores depends on the data (the default CNN reaches about 0.93 test
    accuracy on Fashion-MNIST, far less on CIFAR-10), so ``dataset_rules`` may give a
    dataset its own rules for a task; they replace ``rules.<task>`` whole for models trained
    on that dataset (a merge would keep bounds that make no sense there, e.g. a loss bound).
    """

    metrics_files: list[str] = Field(min_length=1)
    baseline: str | None = Field(description="git revision; null: no regression rules")
    missing_baseline: Literal["pass", "fail"] = Field(
        description="verdict when the baseline revision or its metrics are absent")
    rules: TaskRules = Field(description="per task: metric -> bounds")
    dataset_rules: dict[DatasetName, TaskRules] = Field(
        description="per dataset, per task: rules replacing rules.<task> for that dataset")

    def rules_for(self, dataset: str, task: str) -> tuple[str, dict[str, MetricRule]]:
        """The rules that gate a ``task`` model trained on ``dataset``, and where they are
        set (``gates.dataset_rules.cifar10.classification``), for reports to say."""
        per_dataset: dict[str, dict[str, MetricRule]] = dict(self.dataset_rules.get(dataset, {}))
        if task in per_dataset:
            return f"gates.dataset_rules.{dataset}.{task}", per_dataset[task]
        return f"gates.rules.{task}", dict(self.rules).get(task, {})

    @model_validator(mode="after")
    def _paths_revision_metrics(self) -> GatesConfig:
        # Metrics files are read from the work tree *and* from git at the baseline revision,
        # so they must be paths inside the repository, relative to its root.
        for name in self.metrics_files:
            if not name or name.startswith("/") or ".." in PurePosixPath(name).parts:
                raise ValueError(f"gates.metrics_files: {name!r} must be a path relative to "
                                 "the repository root, inside it")
        if self.baseline is not None and not is_revision(self.baseline):
            raise ValueError(f"gates.baseline: {self.baseline!r} is not a git revision (use "
                             "null for no baseline)")
        _check_rules("gates.rules", self.rules)
        for dataset, rules in self.dataset_rules.items():
            _check_rules(f"gates.dataset_rules.{dataset}", rules)
        return self


class Params(Section):
    """The whole of ``params.yaml``."""

    seed: int = Field(ge=0, le=2**32 - 1)
    data: DataConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    trainer: TrainerConfig
    callbacks: CallbacksConfig
    tuner: TunerConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    tracking: TrackingConfig
    gates: GatesConfig

    @model_validator(mode="after")
    def _across_sections(self) -> Params:
        """Reject combinations that would only fail (or mislead) after hours of training."""
        task = self.model.task
        if task == "reconstruction":
            cb = self.callbacks
            for where, monitor in (("callbacks.checkpoint.monitor", cb.checkpoint.monitor),
                                   ("callbacks.early_stopping.monitor",
                                    cb.early_stopping.monitor)):
                if monitor != "val_loss":
                    raise ValueError(f"{where} = '{monitor}', but model.name = "
                                     f"'{self.model.name}' is a reconstruction model with no "
                                     "accuracy; monitor 'val_loss'")
        gates, dataset = self.gates, self.data.dataset
        if (gates.rules or gates.dataset_rules) and task not in gates.rules \
                and task not in gates.dataset_rules.get(dataset, {}):
            raise ValueError(
                f"model.name = '{self.model.name}' is a {task} model, but gates.rules has "
                f"rules only for {', '.join(sorted(gates.rules)) or 'no task'}; add "
                f"gates.rules.{task} (or gates.dataset_rules.{dataset}.{task}; its metrics: "
                f"{', '.join(TASK_METRICS[task])}) so CI can gate it")
        if self.model.name == "cifar_cnn" and self.data.dataset == "digits":
            raise ValueError("model.name = 'cifar_cnn' needs images of at least 16×16 (its "
                             "four 3×3 convolutions and two poolings); data.dataset = "
                             "'digits' is 8×8")
        for knob, value in (("data.batch_size", self.data.batch_size),
                            ("optimizer.lr", self.optimizer.lr)):
            if value == "auto" and self.trainer.multi_device:
                raise ValueError(f"{knob} 'auto' (Lightning's finder) does not support "
                                 "multi-device training; set a number")
        return self
