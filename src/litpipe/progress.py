"""The progress bar every stage that runs a Lightning Trainer shows."""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import TQDMProgressBar


def progress_bar() -> TQDMProgressBar:
    """A tqdm bar (rich's bar prints nothing until the end when DVC pipes the output).

    When stderr is not a terminal (``dvc repro`` logs, CI), refresh rarely so the log shows
    steady progress lines instead of thousands of carriage returns.
    """
    return TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 50)
