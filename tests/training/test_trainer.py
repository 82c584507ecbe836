"""litpipe.training.trainer: the Trainer the train stage builds, as a person sees it (a bar
on a terminal only) and as it runs (no per-call profiling cost)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ProgressBar

from litpipe.params import load_params
from litpipe.progress import TerminalProgressBar
from litpipe.training.trainer import NoProfiler, build_trainer
from tests.helpers.repo import ROOT


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_a_bar_only_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  terminal: bool) -> None:
    """Off a terminal there is no bar callback at all (a disabled one is still called on
    every step), and Lightning does not add its own."""
    monkeypatch.setattr("sys.stdout", _Terminal() if terminal else io.StringIO())
    params = load_params(ROOT / "params.yaml", overrides={"trainer.enable_progress_bar": True})
    trainer = build_trainer(params, [], tmp_path)
    bars = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert [type(b) for b in bars] == ([TerminalProgressBar] if terminal else [])
    if terminal:
        assert trainer.callbacks[0] is bars[0]


def test_no_profiler_hands_back_one_empty_context(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.trainer.profiler == "none"
    trainer = build_trainer(params, [], tmp_path)
    assert isinstance(trainer.profiler, NoProfiler)
    first, second = trainer.profiler.profile("a"), trainer.profiler.profile("b")
    assert first is second
    with first:
        pass
