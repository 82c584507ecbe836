"""Readers that turn a dataset's raw files into uint8 image arrays and int64 labels.

Each returns ``{"train": (x, y), "test": (x, y)}`` with ``x`` shaped N×C×H×W. Headers and
shapes are checked, so a truncated or foreign file fails with a message naming it instead
of producing a silently wrong array.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from litpipe.errors import LitpipeError, MissingInputError

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


class RawDataError(LitpipeError, ValueError):
    """A raw file is not what its dataset's format says it should be."""


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST family's format) into a uint8 array.

    Accepts plain or gzip-compressed files. The header is checked so that a truncated or
    foreign file fails with a message instead of a silently wrong shape.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingInputError(f"{path}: missing; run the download stage (dvc repro "
                                "download)") from None
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise RawDataError(f"{path}: not an IDX file (bad magic)")
    if raw[2] != 0x08:
        raise RawDataError(f"{path}: IDX type {raw[2]:#x} is not unsigned byte")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise RawDataError(
            f"{path}: IDX header says {dims} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx_dataset(raw_dir: Path) -> Arrays:
    """Load an MNIST-family dataset from its decompressed IDX files.

    Returns ``{"train": (x, y), "test": (x, y)}`` with ``x`` shaped N×1×H×W uint8.
    """
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(raw_dir / f"{prefix}-images-idx3-ubyte")
        y = read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte")
        if len(x) != len(y):
            raise RawDataError(f"{raw_dir}: {split} has {len(x)} images but {len(y)} labels")
        out[split] = (x[:, None, :, :], y.astype(np.int64))
    return out


def load_digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> Arrays:
    """Load scikit-learn's bundled 8×8 digits as uint8 images in 0..255.

    The set has no official test split, so a fixed, seeded stratified 20 % is held out.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are 0..16; scale to the 0..255 range every other dataset uses.
    x = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}
