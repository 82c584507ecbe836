"""The progress bar every stage that runs a Lightning Trainer shows: live on a terminal,
absent from a log."""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


def on_terminal() -> bool:
    """Whether a person watches the output live: Lightning's bars write to stdout.

    Anywhere else (``dvc repro > log``, CI, ``dvc queue logs``) a bar is carriage returns
    and cursor-up codes, and glues the next line onto itself; the train stage's own
    ``litpipe train: epoch N/M`` line already says the same once an epoch.
    """
    return sys.stdout.isatty()


REDRAW_EVERY_S = 0.1


class TerminalProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar (rich's prints nothing until the end when DVC pipes the output),
    counting batches on a terminal, redrawn ten times a second, and off for good anywhere
    else.

    Off stays off: Lightning's finders call :meth:`enable` after they ran with the bar
    disabled, which would otherwise switch it on in a log.
    """

    def __init__(self) -> None:
        super().__init__(refresh_rate=1)
        self._drawn_at = 0.0
        if not on_terminal():
            self.disable()

    def _should_update(self, current: int, total: int) -> bool:
        """Redraw at most ten times a second, and at the first and last batches (a new
        bar shows its first batch at once, whenever the last bar drew). Lightning redraws the
        bar and rebuilds its metrics on every batch (tqdm's own rate limit does not apply
        to how Lightning sets the count): for a small model, a share of each step."""
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current in (1, total) or now - self._drawn_at >= REDRAW_EVERY_S:
            self._drawn_at = now
            return True
        return False

    def enable(self) -> None:
        if on_terminal():
            super().enable()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Wipe the bar from its line, so that the ``litpipe train: epoch N/M`` line printed
        next (by a callback after this one: ``build_trainer`` puts the bar first) starts at
        the left margin; the bar redraws below it when the next epoch starts."""
        super().on_train_epoch_end(trainer, pl_module)
        if not self.train_progress_bar.disable:
            self.train_progress_bar.clear()


def progress_bar() -> TerminalProgressBar:
    """The bar a stage's Trainer shows when ``trainer.enable_progress_bar`` is on."""
    return TerminalProgressBar()
