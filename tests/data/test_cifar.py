"""CIFAR-10 batches load as arrays; anything else a pickle might smuggle in is refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from litpipe.data.cifar import UnsafePickleError, load_batch, load_cifar10


def write_batch(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": b"x"}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def test_loads_real_layout(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        write_batch(base / f"data_batch_{i}", 4, i)
    write_batch(base / "test_batch", 3, 9)
    data = load_cifar10(tmp_path)
    assert data["train"][0].shape == (20, 3, 32, 32) and data["train"][0].dtype == np.uint8
    assert data["test"][1].dtype == np.int64 and len(data["test"][1]) == 3


class _Evil:
    def __reduce__(self):  # what a tampered batch could carry
        return (os.system, ("echo pwned",))


def test_refuses_code_in_pickle(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_batch(path)


def test_rejects_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match="expected N×3072"):
        load_batch(path)
