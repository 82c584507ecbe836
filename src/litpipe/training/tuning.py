"""Lightning's learning-rate and batch-size finders, for ``optimizer.lr`` / ``data.batch_size``
set to ``auto``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from litpipe.config import Params
from litpipe.data.datamodule import ArrayDataModule
from litpipe.errors import LitpipeError
from litpipe.model.module import LitBase


class TuningError(LitpipeError):
    """A finder found nothing usable; the message says which knob to set instead."""


def tune(params: Params, trainer: L.Trainer | None, module: LitBase, dm: ArrayDataModule,
         workdir: Path) -> dict[str, Any]:
    """Run the finders that params ask for; return what they chose (``models/tuning.json``).

    ``trainer`` may be None when neither ``optimizer.lr`` nor ``data.batch_size`` is auto.

    The batch size is tuned first (the best learning rate depends on it), as Lightning's docs
    recommend.
    """
    from lightning.pytorch.tuner import Tuner

    cfg = params.tuner
    result: dict[str, Any] = {"lr": module.lr, "batch_size": dm.batch_size,
                              "lr_tuned": params.optimizer.lr == "auto",
                              "batch_size_tuned": params.data.batch_size == "auto"}
    if not (result["lr_tuned"] or result["batch_size_tuned"]):
        return result
    assert trainer is not None, "the finders need a Trainer"
    tuner = Tuner(trainer)
    if result["batch_size_tuned"]:
        dm.setup("fit")
        found = tuner.scale_batch_size(module, datamodule=dm, mode="power",
                                       steps_per_trial=cfg.steps_per_trial, init_val=16,
                                       max_val=min(cfg.max_batch_size,
                                                   len(dm.datasets["train"])))
        result["batch_size"] = int(found or dm.batch_size)
        dm.batch_size = result["batch_size"]
    if result["lr_tuned"]:
        finder = tuner.lr_find(module, datamodule=dm, min_lr=cfg.min_lr,
                               max_lr=cfg.max_lr, num_training=cfg.num_training)
        suggestion = finder.suggestion() if finder is not None else None
        if suggestion is None:
            raise TuningError("Lightning's learning-rate finder found no suggestion; set "
                              "optimizer.lr to a number or widen tuner.min_lr/max_lr")
        module.lr = float(suggestion)
        result["lr"] = module.lr
        import matplotlib

        matplotlib.use("Agg")
        fig = finder.plot(suggest=True)
        fig.savefig(workdir / "lr_finder.png", dpi=100, bbox_inches="tight")
        result["lr_finder"] = {"min_lr": cfg.min_lr, "max_lr": cfg.max_lr,
                               "num_training": cfg.num_training}
    return result
