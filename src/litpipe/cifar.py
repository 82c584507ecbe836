"""Read CIFAR-10's python-format batches without trusting pickle.

The official ``cifar-10-batches-py`` files are Python 2 pickles of dicts holding a uint8
numpy array and a list of labels. Plain ``pickle.load`` would run whatever a tampered file
asks for, so a restricted unpickler allows only the handful of globals a numpy array needs
and refuses everything else with a clear error.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


class UnsafePickleError(pickle.UnpicklingError):
    """A CIFAR batch file asked to load something other than plain arrays and lists."""


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name}: CIFAR batches hold only "
                                "numpy arrays and lists")


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (images N×3×32×32 uint8, labels int64)."""
    raw = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict, got {type(raw).__name__}")
    data = raw.get(b"data", raw.get("data"))
    labels = raw.get(b"labels", raw.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: missing 'data' or 'labels'")
    x = np.asarray(data, dtype=np.uint8)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: data has shape {x.shape}, expected N×3072")
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(x):
        raise ValueError(f"{path}: {len(x)} images but {len(y)} labels")
    return x.reshape(-1, 3, 32, 32), y


def load_cifar10(raw_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (x, y), "test": (x, y)}`` from ``raw_dir/cifar-10-batches-py``."""
    base = raw_dir / "cifar-10-batches-py"
    parts = [load_batch(base / name) for name in TRAIN_BATCHES]
    return {
        "train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
        "test": load_batch(base / TEST_BATCH),
    }
