"""The split stage's logic: raw files → seeded train/val/test uint8 arrays + stats.json.

Arrays are saved as ``.npy`` so that training memory-maps them in milliseconds instead of
decoding images one by one. ``stats.json`` carries everything later stages need to build a
model for this data (shape, class names, normalisation) and content hashes for lineage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from litpipe.atomic import atomic_dir
from litpipe.config import Params
from litpipe.datasets import array_digest, get_spec, load_raw

SPLITS = ("train", "val", "test")


class SplitError(ValueError):
    """The requested split does not fit the data (e.g. val_size larger than the train set)."""


def _class_counts(y: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(y, minlength=num_classes).astype(int).tolist()


def make_splits(params: Params, raw: dict[str, tuple[np.ndarray, np.ndarray]]
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seeded split of the official training set into train/val, plus the test set.

    The permutation depends only on ``params.seed``, so the same params always give the
    same split. ``train_size``/``test_size`` cap the sets for quick runs.
    """
    cfg = params.data
    x, y = raw["train"]
    n = len(x)
    if cfg.val_size >= n:
        raise SplitError(
            f"data.val_size = {cfg.val_size}, but {cfg.dataset} has only {n} training "
            f"samples; choose a value below {n}"
        )
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(n)
    val_idx = np.sort(order[: cfg.val_size])
    train_idx = order[cfg.val_size:]
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


def split_stage(params: Params, raw_root: Path, out_dir: Path) -> dict[str, Any]:
    """Run the split stage: read ``raw_root/<dataset>``, write ``out_dir`` atomically."""
    spec = get_spec(params.data.dataset)
    raw = load_raw(spec.name, raw_root / spec.name)
    for split, (x, _) in raw.items():
        if tuple(x.shape[1:]) != spec.shape:
            raise SplitError(f"{spec.name} {split} images have shape {x.shape[1:]}, "
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
    with atomic_dir(out_dir) as tmp:
        for name, (x, y) in splits.items():
            np.save(tmp / f"{name}_x.npy", np.ascontiguousarray(x, dtype=np.uint8))
            np.save(tmp / f"{name}_y.npy", np.ascontiguousarray(y, dtype=np.int64))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def load_stats(processed_dir: Path) -> dict[str, Any]:
    """Read ``stats.json`` written by the split stage."""
    path = processed_dir / "stats.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the split stage first (dvc repro split)")
    return json.loads(path.read_text())


def load_split(processed_dir: Path, split: str, mmap: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """Load one split's (images, labels); memory-mapped so start-up stays fast."""
    mode = "r" if mmap else None
    x = np.load(processed_dir / f"{split}_x.npy", mmap_mode=mode)
    y = np.load(processed_dir / f"{split}_y.npy", mmap_mode=mode)
    return x, y
