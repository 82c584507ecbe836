"""The tables of what ``params.yaml`` may name: networks, optimisers, schedulers.

One entry per name, read by the schema (which names are allowed), by the builders (what to
construct) and by the train stage (what applies): adding a network is one entry here plus
its class. Classes are named by import path and loaded only when built, because the schema
reads these tables before torch is imported (validation takes a fraction of a second).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["classification", "reconstruction"]


def _load(path: str) -> Any:
    """``"package.module:Name"`` → the object."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Network:
    """A ``model.name``: its ``nn.Module`` class, what it learns, and whether its layers
    are convolutions (what ``model.channels_last`` applies to)."""

    cls: str  # "module:Class"; the class takes one NetworkArgs (model/networks.py)
    task: Task
    convolutional: bool

    def load(self) -> Any:
        return _load(self.cls)


NETWORKS: dict[str, Network] = {
    "cnn": Network("litpipe.model.networks:SmallCNN", "classification", convolutional=True),
    "mlp": Network("litpipe.model.networks:MLP", "classification", convolutional=False),
    "cifar_cnn": Network("litpipe.model.networks:CifarCNN", "classification",
                         convolutional=True),
    "autoencoder": Network("litpipe.model.networks:AutoEncoder", "reconstruction",
                           convolutional=False),
}


@dataclass(frozen=True)
class Optimizer:
    """An ``optimizer.name``: the torch class, and which ``optimizer.*`` values it takes
    besides the learning rate and the weight decay."""

    cls: str
    extra: tuple[str, ...] = ()

    def load(self) -> Any:
        return _load(self.cls)


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer("torch.optim:SGD", extra=("momentum",)),
    "adam": Optimizer("torch.optim:Adam"),
    "adamw": Optimizer("torch.optim:AdamW"),
}


@dataclass(frozen=True)
class Scheduler:
    """A ``scheduler.name``: the torch class, how often it steps, and its arguments from
    the module's hyperparameters, the peak rate and the Trainer (epochs, total steps)."""

    cls: str
    interval: Literal["epoch", "step"]
    arguments: Callable[[dict[str, Any], float, Any], dict[str, Any]] = field(
        default=lambda hp, lr, trainer: {})

    def load(self) -> Any:
        return _load(self.cls)


SCHEDULERS: dict[str, Scheduler | None] = {
    "none": None,
    "step": Scheduler("torch.optim.lr_scheduler:StepLR", "epoch",
                      lambda hp, lr, trainer: {"step_size": hp["step_size"],
                                               "gamma": hp["gamma"]}),
    "cosine": Scheduler("torch.optim.lr_scheduler:CosineAnnealingLR", "epoch",
                        lambda hp, lr, trainer: {"T_max": trainer.max_epochs}),
    # Sized by Lightning's count of the optimiser steps the fit will take.
    "onecycle": Scheduler("torch.optim.lr_scheduler:OneCycleLR", "step",
                          lambda hp, lr, trainer: {
                              "max_lr": lr,
                              "total_steps": max(1, int(trainer.estimated_stepping_batches))}),
}
