"""Read CIFAR-10's python-format batches without trusting pickle.

The official ``cifar-10-batches-py`` files are Python 2 pickles of dicts holding a uint8
numpy array (``b"data"``, N×3072) and a list of labels (``b"labels"``). Plain
``pickle.load`` would run whatever a tampered file asks for, so a restricted unpickler
hands out only the few callables a numpy array's pickle needs and refuses everything else
with a clear error. Files are read with ``encoding="bytes"`` because Python 2 ``str``
(keys and the array's raw buffer) must stay bytes.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from litpipe.data.readers import RawDataError
from litpipe.errors import LitpipeError, MissingInputError

try:  # numpy >= 2 moved the module; pickles name either spelling
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

# (module, name) a pickle may ask for -> the object it gets. Objects are handed out from
# this table, never imported by name, so nothing else can be reached through it.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): codecs.encode,
}
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
NUM_CLASSES = 10


class UnsafePickleError(LitpipeError, pickle.UnpicklingError):
    """A CIFAR batch file asked to load something other than plain arrays and lists."""


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dicts, lists and scalars, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: CIFAR batches hold only numpy arrays and "
                "lists, so this file is not a genuine CIFAR-10 batch") from None


def _get(raw: dict[Any, Any], key: str) -> Any:
    """``raw[b"key"]`` as Python 2 wrote it, or ``raw["key"]`` from a Python 3 re-pickle."""
    return raw.get(key.encode(), raw.get(key))


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (images N×3×32×32 uint8, labels int64), checked for shape and range."""
    try:
        raw = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise RawDataError(f"{path}: not a readable CIFAR-10 batch ({exc})") from None
    if not isinstance(raw, dict):
        raise RawDataError(f"{path}: expected a dict, got {type(raw).__name__}")
    data, labels = _get(raw, "data"), _get(raw, "labels")
    if data is None or labels is None:
        raise RawDataError(f"{path}: missing 'data' or 'labels'")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise RawDataError(f"{path}: data must be a uint8 array, got "
                         f"{getattr(data, 'dtype', type(data).__name__)}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise RawDataError(f"{path}: data has shape {data.shape}, expected N×3072")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise RawDataError(f"{path}: labels are not integers ({exc})") from None
    if y.ndim != 1 or len(y) != len(data):
        raise RawDataError(f"{path}: {len(data)} images but labels of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise RawDataError(f"{path}: labels must be in 0..{NUM_CLASSES - 1}, "
                         f"got {y.min()}..{y.max()}")
    # Rows are 1024 red, 1024 green, 1024 blue values, each row-major 32×32: C×H×W order.
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), y


def load_cifar10(raw_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (x, y), "test": (x, y)}`` from ``raw_dir/cifar-10-batches-py``.

    ``x`` is N×3×32×32 uint8, ``y`` int64; train is ``data_batch_1..5`` in order.
    """
    base = Path(raw_dir) / "cifar-10-batches-py"
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (base / n).is_file()]
    if missing:
        raise MissingInputError(f"{base}: missing CIFAR-10 batch file(s) {', '.join(missing)}; "
                                "run the download stage (dvc repro download)")
    parts = [load_batch(base / name) for name in TRAIN_BATCHES]
    return {
        "train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
        "test": load_batch(base / TEST_BATCH),
    }
