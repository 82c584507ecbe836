"""Lightning's learning-rate and batch-size finders, for ``optimizer.lr`` / ``data.batch_size``
set to ``auto``.

The finders search with a throwaway module and DataModule (they set the attributes they
tune on them, which is how Lightning's Tuner works); the train stage then builds the objects
it trains once, with the values found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from litpipe.data.datamodule import ArrayDataModule
from litpipe.errors import LitpipeError
from litpipe.model.module import LitBase
from litpipe.schema import TunerConfig

# Where the throwaway objects start: the batch size the batch-size finder's DataModule holds
# before it searches (the search itself starts at 16), and the rate the lr finder's module
# holds before it searches.
BATCH_SIZE_BEFORE_TUNING = 64
LR_BEFORE_TUNING = 1e-3


class TuningError(LitpipeError):
    """A finder found nothing usable; the message says which knob to set instead."""


def tune(cfg: TunerConfig, trainer: L.Trainer, trial: LitBase, trial_dm: ArrayDataModule,
         find_lr: bool, find_batch_size: bool, workdir: Path) -> dict[str, Any]:
    """Run the finders asked for on ``trial``/``trial_dm``; return what they chose, in the
    shape of ``models/tuning.json``.

    The batch size is tuned first (the best learning rate depends on it), as Lightning's docs
    recommend; the learning-rate finder then runs at the batch size found.
    """
    from lightning.pytorch.tuner import Tuner

    tuner = Tuner(trainer)
    batch_size = trial_dm.batch_size
    if find_batch_size:
        trial_dm.setup("fit")
        found = tuner.scale_batch_size(trial, datamodule=trial_dm, mode="power",
                                       steps_per_trial=cfg.steps_per_trial, init_val=16,
                                       max_val=min(cfg.max_batch_size,
                                                   len(trial_dm.datasets["train"])))
        batch_size = int(found or batch_size)
    result: dict[str, Any] = {"lr": float(trial.lr), "batch_size": batch_size,
                              "lr_tuned": find_lr, "batch_size_tuned": find_batch_size}
    if find_lr:
        finder = tuner.lr_find(trial, datamodule=trial_dm, min_lr=cfg.min_lr,
                               max_lr=cfg.max_lr, num_training=cfg.num_training,
                               update_attr=False)
        suggestion = finder.suggestion() if finder is not None else None
        if suggestion is None:
            raise TuningError("Lightning's learning-rate finder found no suggestion; set "
                              "optimizer.lr to a number or widen tuner.min_lr/max_lr")
        result["lr"] = float(suggestion)
        import matplotlib

        matplotlib.use("Agg")
        fig = finder.plot(suggest=True)
        fig.savefig(workdir / "lr_finder.png", dpi=100, bbox_inches="tight")
        result["lr_finder"] = {"min_lr": cfg.min_lr, "max_lr": cfg.max_lr,
                               "num_training": cfg.num_training}
    return result
