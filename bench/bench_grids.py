"""Per-epoch validation picture: matplotlib figure vs torchvision ``make_grid`` + Pillow.

The train stage draws one such picture per epoch (``callbacks.val_image_samples``), so its
cost is paid every epoch. Run: ``python bench/bench_grids.py`` (prints medians of 20 draws).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from litpipe.pictures.figures import sample_grid
from litpipe.pictures.grids import prediction_grid

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


def median_ms(fn, rounds: int = 20) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 1, 28, 28), dtype=np.uint8)
    true = rng.integers(0, 10, 16).tolist()
    pred = rng.integers(0, 10, 16).tolist()
    probs = rng.random(16).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "grid.png"
        mpl = median_ms(lambda: sample_grid(images, true, pred, CLASSES, out, probs=probs))
        tv = median_ms(lambda: prediction_grid(torch.from_numpy(images), true, pred, probs,
                                               CLASSES, out, title="Validation, epoch 0"))
    print(f"16 images, median of 20: matplotlib {mpl:.1f} ms, torchvision+Pillow {tv:.1f} ms, "
          f"ratio {mpl / tv:.1f}x")


if __name__ == "__main__":
    main()
