"""litpipe/data/mirrors.py: what fetching one file prints (the failures are in
test_download.py, through the download stage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from litpipe.data.mirrors import fetch
from tests.helpers.http import Routes


def test_no_progress_bar_when_stderr_is_not_a_terminal(
        server: tuple[str, Routes], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In a `dvc repro` log a bar is carriage returns (issue 22); on a terminal it shows."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    url, routes = server
    payload = bytes(range(256)) * 1024
    routes.set("bar", {"file.bin": payload})
    fetch(f"{url}/bar/file.bin", tmp_path / "file.bin", 5.0, True, "file.bin")
    assert (tmp_path / "file.bin").read_bytes() == payload
    assert capsys.readouterr().err == ""  # captured: not a terminal
