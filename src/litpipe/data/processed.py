"""The split stage's output format, ``data/processed/``: what later stages read.

``{train,val,test}_{x,y}.npy`` (uint8 N×C×H×W images, int64 labels) are memory-mapped by
readers, so start-up costs milliseconds; ``stats.json`` carries what later stages need to
build a model for the data (shape, class names, normalisation) and content hashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from litpipe.atomic import atomic_dir, write_json
from litpipe.errors import MissingInputError

SPLITS = ("train", "val", "test")


def save_processed(out_dir: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                   stats: dict[str, Any]) -> None:
    """Write every split and ``stats.json`` into ``out_dir``, replacing it atomically."""
    with atomic_dir(out_dir) as tmp:
        for name, (x, y) in splits.items():
            np.save(tmp / f"{name}_x.npy", np.ascontiguousarray(x, dtype=np.uint8))
            np.save(tmp / f"{name}_y.npy", np.ascontiguousarray(y, dtype=np.int64))
        write_json(tmp / "stats.json", stats)


def load_stats(processed_dir: Path) -> dict[str, Any]:
    """Read ``stats.json`` written by the split stage."""
    path = processed_dir / "stats.json"
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run the split stage first (dvc repro "
                                "split)")
    return json.loads(path.read_text())


def load_split(processed_dir: Path, split: str, mmap: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """Load one split's (images, labels); memory-mapped so start-up stays fast."""
    mode = "r" if mmap else None
    x = np.load(processed_dir / f"{split}_x.npy", mmap_mode=mode)
    y = np.load(processed_dir / f"{split}_y.npy", mmap_mode=mode)
    return x, y
