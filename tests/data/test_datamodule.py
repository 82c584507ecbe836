"""litpipe.data.datamodule: what the training batches hold under data.augment and
data.max_shift."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from litpipe.data.datamodule import ArrayDataModule
from litpipe.data.processed import save_processed


def _processed(tmp: Path, dataset: str) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 1, 12, 12), dtype=np.uint8)
    y = rng.integers(0, 10, 64)
    out = tmp / "processed"
    save_processed(out, {s: (x, y) for s in ("train", "val", "test")},
                   {"dataset": dataset, "shape": [1, 12, 12]})
    return out


def _augmented(processed: Path, max_shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    dm = ArrayDataModule(processed, batch_size=64, augment=True, max_shift=max_shift)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(training=True)  # type: ignore[assignment]
    x, y = dm.datasets["train"].tensors
    out, _ = dm.on_after_batch_transfer((x, y), 0)
    return x.float() / 255, out


@pytest.mark.parametrize("max_shift", [0, 2])
def test_max_shift_zero_flips_only(tmp_path: Path, max_shift: int) -> None:
    original, out = _augmented(_processed(tmp_path, "fashion_mnist"), max_shift)
    same = (out == original).flatten(1).all(1)
    mirrored = (out == original.flip(-1)).flatten(1).all(1)
    if max_shift == 0:
        assert mirrored.any() and same.any()  # about half the batch is mirrored
        assert (same | mirrored).all()
    else:
        assert not (same | mirrored).all()  # some images moved


def test_no_flips_where_a_mirror_changes_the_class(tmp_path: Path) -> None:
    original, out = _augmented(_processed(tmp_path, "digits"), 0)
    assert torch.equal(out, original)
