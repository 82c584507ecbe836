"""A real trained model, checkpoint and export in seconds, for the predict and checkpoint tests.

Scikit-learn's digits go through the real split stage; a LightningModule from
``build_module`` is fitted for two epochs by a plain ``lightning.Trainer`` and saved with
``Trainer.save_checkpoint`` (the same file format the train stage writes); the real export
stage then writes ``models/export/`` from it. Only MLflow is left out: the export stage's
tracked run is replaced by a stand-in that records nothing, and its registration of the
served model by a no-op, so no tracking store is needed (tests/helpers/registry.py has
the variant with a real SQLite store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from litpipe.params import load_params
from litpipe.schema import Params
from tests.helpers.repo import ROOT

DIGITS = {"data.dataset": "digits", "data.val_size": 200, "export.parity_batch": 8,
          "trainer.enable_progress_bar": False}


class NoTracking:
    """Stands in for the export stage's TrackedRun: accepts every call, records nothing."""

    @classmethod
    def attach(cls, path: Path) -> NoTracking:
        return cls()

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def digits_params(**overrides: object) -> Params:
    return load_params(ROOT / "params.yaml", overrides={**DIGITS, **overrides})


def train_checkpoint(base: Path, epochs: int = 2) -> Params:
    """Write ``base/processed`` and ``base/models/best.ckpt`` (a real Lightning checkpoint)."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from litpipe.data.pixels import to_unit_range
    from litpipe.data.processed import load_split
    from litpipe.data.split import split as split_stage
    from litpipe.model.module import build_module

    params = digits_params()
    (base / "raw/digits").mkdir(parents=True, exist_ok=True)
    stats = split_stage(params, base / "raw", base / "processed")
    x, y = load_split(base / "processed", "train")
    L.seed_everything(0, workers=True)
    module = build_module(params, stats, params.optimizer.lr)
    data = TensorDataset(to_unit_range(torch.from_numpy(np.array(x))),
                         torch.from_numpy(np.array(y)))
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(data, batch_size=64, shuffle=True))
    (base / "models").mkdir(exist_ok=True)
    trainer.save_checkpoint(base / "models/best.ckpt")
    return params


def build_models(base: Path, epochs: int = 2) -> Params:
    """:func:`train_checkpoint`, then the real export stage: ``base/models/export/``."""
    import litpipe.exporting.export as export_stage

    params = train_checkpoint(base, epochs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_stage, "TrackedRun", NoTracking)
        mp.setattr(export_stage, "log_served_model", lambda *args, **kwargs: None)
        export_stage.export(params, base / "processed", base / "models", base / "reports")
    return params
