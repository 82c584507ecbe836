"""The split stage: raw files → seeded train/val/test uint8 arrays + ``stats.json``.

Arrays are saved as ``.npy`` so that training memory-maps them in milliseconds instead of
decoding images one by one. ``stats.json`` carries everything later stages need to build a
model for this data (shape, class names, normalisation) and content hashes for lineage.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from litpipe.schema import Params
from litpipe.data.cifar import load_cifar10
from litpipe.data.processed import SPLITS, save_processed
from litpipe.data.readers import Arrays, load_digits_dataset, load_idx_dataset
from litpipe.data.datasets import get_spec
from litpipe.errors import LitpipeError
from litpipe.repo import PROCESSED, RAW


class SplitError(LitpipeError, ValueError):
    """The requested split does not fit the data (e.g. val_size larger than the train set)."""


def _class_counts(y: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(y, minlength=num_classes).astype(int).tolist()


def val_count(val_size: int | float, n: int, dataset: str) -> int:
    """How many of the ``n`` training samples ``data.val_size`` holds out.

    An int is that count; a float is a fraction of ``n``, rounded half up, so one value
    suits every dataset: 0.0833333 (1/12) is 5000 of Fashion-MNIST's 60000 (the split's
    historical size) and 120 of digits' 1437. Either must leave at least one sample on
    each side.
    """
    if isinstance(val_size, int):
        count, shown = val_size, f"{val_size}"
    else:
        count = math.floor(val_size * n + 0.5)
        shown = f"{val_size} ({count} of {n} samples)"
    if not 1 <= count < n:
        raise SplitError(
            f"data.val_size = {shown}, but {dataset} has only {n} training samples; "
            f"choose a count below {n} or a fraction that leaves both sets non-empty "
            f"(e.g. 0.0833333, 1/12)")
    return count


def make_splits(params: Params, raw: dict[str, tuple[np.ndarray, np.ndarray]]
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seeded split of the official training set into train/val, plus the test set.

    The permutation depends only on ``params.seed``, so the same params always give the
    same split (and a fraction that comes to the same count as an int gives the same
    arrays). ``train_size``/``test_size`` cap the sets for quick runs.
    """
    cfg = params.data
    x, y = raw["train"]
    n = len(x)
    n_val = val_count(cfg.val_size, n, cfg.dataset)
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(n)
    val_idx = np.sort(order[:n_val])
    train_idx = order[n_val:]
    if cfg.train_size is not None:
        train_idx = train_idx[: cfg.train_size]
    train_idx = np.sort(train_idx)
    xt, yt = raw["test"]
    test_idx = np.arange(len(xt))
    if cfg.test_size is not None and cfg.test_size < len(xt):
        test_idx = np.sort(rng.permutation(len(xt))[: cfg.test_size])
    return {
        "train": (x[train_idx], y[train_idx]),
        "val": (x[val_idx], y[val_idx]),
        "test": (xt[test_idx], yt[test_idx]),
    }


def load_raw(name: str, raw_dir: Path) -> Arrays:
    """Dataset ``name``'s train and test arrays from ``raw_dir`` (``data/raw/<name>``)."""
    if name == "cifar10":
        return load_cifar10(raw_dir)
    if name == "digits":
        return load_digits_dataset()
    return load_idx_dataset(raw_dir)  # fashion_mnist, mnist: the same IDX files


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over arrays' shapes, dtypes and bytes: a content hash for data lineage."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def split(params: Params, raw_root: Path = RAW, out_dir: Path = PROCESSED) -> dict[str, Any]:
    """The split stage: read ``raw_root/<dataset>``, write ``out_dir`` atomically.

    Returns what ``stats.json`` holds.
    """
    spec = get_spec(params.data.dataset)
    raw = load_raw(spec.name, raw_root / spec.name)
    for name, (x, _) in raw.items():
        if tuple(x.shape[1:]) != spec.shape:
            raise SplitError(f"{spec.name} {name} images have shape {x.shape[1:]}, "
                             f"expected {spec.shape}")
    splits = make_splits(params, raw)
    stats: dict[str, Any] = {
        "dataset": spec.name,
        "shape": list(spec.shape),
        "classes": list(spec.classes),
        "num_classes": spec.num_classes,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "seed": params.seed,
        "counts": {k: int(len(v[1])) for k, v in splits.items()},
        "class_counts": {k: _class_counts(v[1], spec.num_classes) for k, v in splits.items()},
        "hashes": {k: array_digest(*v) for k, v in splits.items()},
    }
    stats["data_hash"] = array_digest(*(a for s in SPLITS for a in splits[s]))
    save_processed(out_dir, splits, stats)
    return stats
