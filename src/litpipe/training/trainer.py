"""The Lightning Trainer the train stage (and its finders) run: ``params.trainer`` as it is,
deterministic, with the profiler and the extra logger params ask for, and a console output
a person reads (the progress bar only on a terminal, one line for the model)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.model_summary import get_human_readable_count

from litpipe.progress import on_terminal, progress_bar
from litpipe.repo import find_repo_root
from litpipe.schema import Params
from litpipe.training.device import deterministic_without_fill, resolve_precision
from litpipe.training.resume import VerifiedCheckpointIO


class NoProfiler(PassThroughProfiler):
    """Lightning's "no profiler" (PassThroughProfiler), without its cost per hook call.

    Lightning wraps every hook call, on the module and on each callback, in
    ``with trainer.profiler.profile(name):``. The pass-through profiler's ``profile`` is a
    generator-based context manager built anew for each call: about seventy a training
    step with litpipe's callbacks, a measurable share of a small model's step
    (docs/performance.md). This one hands back one shared, empty context.
    """

    _nothing = nullcontext()

    def profile(self, action_name: str) -> AbstractContextManager[None]:  # type: ignore[override]
        return self._nothing


def _profiler(kind: str, workdir: Path) -> Any:
    """Lightning's profiler, writing its report to a file (logged to MLflow), or the
    cheapest one that profiles nothing."""
    if kind == "none":
        return NoProfiler()
    from lightning.pytorch.profilers import AdvancedProfiler, SimpleProfiler

    cls = SimpleProfiler if kind == "simple" else AdvancedProfiler
    return cls(dirpath=workdir, filename="profile")


def _logger(kind: str, name: str) -> Any:
    """A Lightning logger besides litpipe's MLflow run (which logs per epoch itself)."""
    if kind == "none":
        return False
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(find_repo_root() / "lightning_logs", name=name)


class ModelLine(Callback):
    """One line for the model instead of Lightning's summary table, which lists the
    LightningModule's torchmetrics (test_acc, test_confusion, ...) as layers, takes 20 lines
    and warns that it cannot size a bf16 model."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            net = getattr(pl_module, "net", pl_module)
            count = sum(p.numel() for p in net.parameters())
            print(f"litpipe train: model {type(net).__name__}, "
                  f"{get_human_readable_count(count).strip()} parameters", flush=True)


def _console(enabled: bool, callbacks: list[Callback], summary: bool) -> list[Callback]:
    """``callbacks`` with litpipe's progress bar (if ``enabled`` and none is there) first,
    and the one-line model summary if ``summary``.

    First, because Lightning calls callbacks in list order: the bar wipes its line at the end
    of an epoch before the history callback prints its ``litpipe train: epoch`` line there.
    Lightning's own default bar is never used: it would draw in a log (progress.py). Off a
    terminal there is no bar at all (``build_trainer`` turns Lightning's off): a disabled
    one would still be called, and do nothing, six times a training step.
    """
    bars = [c for c in callbacks if isinstance(c, ProgressBar)] if enabled else []
    if enabled and not bars:
        bars = [progress_bar()]
    rest = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return [*bars, *rest, *([ModelLine()] if summary else [])]


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
    kwargs["enable_progress_bar"] = bar = cfg.enable_progress_bar and on_terminal()
    if cfg.gradient_clip_val is None:  # Lightning refuses an algorithm without a value
        kwargs["gradient_clip_algorithm"] = None
    for name in ("limit_train_batches", "limit_val_batches"):
        # 1.0 is Lightning's default (None); passing it explicitly makes Lightning print
        # "`Trainer(limit_train_batches=1.0)` was configured so 100% ... will be used".
        if isinstance(kwargs[name], float) and kwargs[name] == 1.0:
            kwargs[name] = None
    trainer = L.Trainer(**kwargs, profiler=_profiler(cfg.profiler, workdir),
                        deterministic=True,
                        logger=_logger(cfg.logger, run_name) if run_name else False,
                        callbacks=_console(bar, callbacks,
                                           summary=run_name is not None),
                        enable_model_summary=False,
                        default_root_dir=workdir,
                        plugins=[VerifiedCheckpointIO()] if verified else None)
    deterministic_without_fill()
    return trainer
