"""Atomic writes: a failure leaves the previous output whole and no temp files behind."""

from __future__ import annotations

import subprocess
import sys
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


# A child process whose writes fail part-way: RLIMIT_FSIZE caps any file it writes at
# LIMIT bytes, so writing a bigger file fails with EFBIG (SIGXFSZ ignored) after LIMIT
# bytes have reached the disk, however the code under test opens and writes the file.
# That is a disk filling up mid-write, reproduced exactly.
LIMIT = 4096
PARTIAL_WRITE = """
import resource, signal, sys
from litpipe.atomic import write_json, write_text
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
target, kind = sys.argv[1], sys.argv[2]
try:
    if kind == "json":
        per_class = {{str(i): 0.5 for i in range(2000)}}  # about 30 kB of JSON
        write_json(target, {{"test_acc": 0.93, "per_class_acc": per_class}})
    else:
        write_text(target, "x" * 20000)
except OSError as exc:
    print(f"failed: {{exc.strerror}}")
else:
    print("written")
"""


@pytest.mark.parametrize("kind", ["json", "text"])
def test_failure_during_the_write_leaves_the_old_file(tmp_path: Path, kind: str) -> None:
    """reports/metrics.json (write_json) and any write_text output: a write that fails
    half-way leaves the previous content whole and no temporary file behind."""
    target = tmp_path / "metrics.json"
    target.write_text('{"test_acc": 0.9}\n')
    proc = subprocess.run([sys.executable, "-c", PARTIAL_WRITE.format(limit=LIMIT),
                           str(target), kind], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "failed: File too large"  # the write really failed
    assert target.read_text() == '{"test_acc": 0.9}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_write_json_replaces_whole_files(tmp_path: Path) -> None:
    """A reader sees the old file or the new one: the rename swaps inodes, so a file handle
    opened before the write still reads the complete old content."""
    target = tmp_path / "metrics.json"
    write_json(target, {"test_acc": 0.9})
    with target.open() as before:
        write_json(target, {"test_acc": 0.95, "test_loss": 0.2})
        assert before.read() == '{\n  "test_acc": 0.9\n}\n'
    assert target.read_text() == '{\n  "test_acc": 0.95,\n  "test_loss": 0.2\n}\n'
