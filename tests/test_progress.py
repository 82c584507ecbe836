"""litpipe/progress.py: the bar counts batches on a terminal and stays off anywhere else
(the whole log is checked in tests/e2e/test_repro_log.py)."""

from __future__ import annotations

import io

import pytest

from litpipe.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_in_a_log_even_after_lightning_enables_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    bar = progress_bar()
    assert bar.is_disabled
    bar.enable()  # what Lightning's lr and batch-size finders call when they are done
    assert bar.is_disabled


def test_on_a_terminal_it_counts_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", _Terminal())
    bar = progress_bar()
    assert bar.is_enabled and bar.refresh_rate == 1
    clock = iter([100.0, 100.05, 100.12, 100.13, 100.14, 100.15])
    monkeypatch.setattr("litpipe.progress.time.monotonic", lambda: next(clock))
    # Redrawn at most every 0.1 s, and always at a bar's first and last batches.
    assert [bar._should_update(n, 50) for n in (1, 2, 3, 4, 50, 1)] == [
        True, False, True, False, True, True]
    bar.disable()  # Lightning's other ranks
    bar.enable()
    assert bar.is_enabled
