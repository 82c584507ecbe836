"""Atomic writes: a failure leaves the previous output whole and no temp files behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from litpipe.atomic import atomic_dir, atomic_path, write_json


def test_atomic_path_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_json_is_stable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, {"b": 1, "a": {"z": 0.5, "y": 2}})
    write_json(b, {"a": {"y": 2, "z": 0.5}, "b": 1})
    assert a.read_bytes() == b.read_bytes()
    assert (a.stat().st_mode & 0o777) != 0o600  # readable like a normal file


def test_atomic_dir_swaps_whole_directory(tmp_path: Path) -> None:
    target = tmp_path / "processed"
    target.mkdir()
    (target / "stale.npy").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.npy").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed"]


def test_atomic_dir_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "processed"
    target.mkdir()
    (target / "keep.npy").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "partial.npy").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["keep.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed"]
