"""The Lightning Trainer the train stage (and its finders) run: ``params.trainer`` as it is,
deterministic, with the profiler and the extra logger params ask for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from litpipe.repo import find_repo_root
from litpipe.schema import Params
from litpipe.training.device import deterministic_without_fill, resolve_precision
from litpipe.training.resume import VerifiedCheckpointIO


def _profiler(kind: str, workdir: Path) -> Any:
    """Lightning's profiler, writing its report to a file (logged to MLflow), or None."""
    if kind == "none":
        return None
    from lightning.pytorch.profilers import AdvancedProfiler, SimpleProfiler

    cls = SimpleProfiler if kind == "simple" else AdvancedProfiler
    return cls(dirpath=workdir, filename="profile")


def _logger(kind: str, name: str) -> Any:
    """A Lightning logger besides litpipe's MLflow run (which logs per epoch itself)."""
    if kind == "none":
        return False
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(find_repo_root() / "lightning_logs", name=name)


def build_trainer(params: Params, callbacks: list[Callback], workdir: Path,
                  run_name: str | None = None, verified: bool = False) -> L.Trainer:
    """``lightning.Trainer(**params.trainer)``, deterministic, with litpipe's callbacks.

    ``run_name`` names the extra Lightning logger's run (``trainer.logger``); without one
    (the finders' Trainer) nothing is logged. ``verified``: checkpoints are written with
    their digests (the resume directory's, :class:`VerifiedCheckpointIO`).
    """
    cfg = params.trainer
    kwargs = cfg.model_dump(exclude={"profiler", "logger"})
    kwargs["precision"] = resolve_precision(cfg.precision, cfg.accelerator)
    if cfg.gradient_clip_val is None:  # Lightning refuses an algorithm without a value
        kwargs["gradient_clip_algorithm"] = None
    trainer = L.Trainer(**kwargs, profiler=_profiler(cfg.profiler, workdir),
                        deterministic=True,
                        logger=_logger(cfg.logger, run_name) if run_name else False,
                        callbacks=callbacks, enable_model_summary=True,
                        default_root_dir=workdir,
                        plugins=[VerifiedCheckpointIO()] if verified else None)
    deterministic_without_fill()
    return trainer
