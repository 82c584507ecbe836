"""litpipe/params.py: reading params.yaml; what DVC refuses, litpipe refuses too."""

from __future__ import annotations

from pathlib import Path

import pytest

from litpipe.params import MAX_BYTES, ParamsError, load_params
from tests.helpers.repo import ROOT


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    """Issue 20, case 7: PyYAML keeps the last value silently; DVC refuses the file."""
    text = (ROOT / "params.yaml").read_text()
    text = text.replace("optimizer:\n", "optimizer:\n  lr: 0.5\n", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    first = text.splitlines().index("  lr: 0.5") + 1
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "duplicate key 'lr'" in message and f"lines {first} and " in message


def test_a_file_over_a_megabyte_is_refused_unread(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + "# padding\n" * (MAX_BYTES // 10))

    def parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file over the limit must not be parsed")

    monkeypatch.setattr("litpipe.params.yaml.load", parse)
    with pytest.raises(ParamsError, match=r"more than the 1,048,576 a params file may hold"):
        load_params(path)


def test_the_shipped_files_load() -> None:
    for name in ("params.yaml", "params.ci.yaml"):
        load_params(ROOT / name)
