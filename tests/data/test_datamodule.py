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


def test_a_batch_is_gathered_whole_as_the_rows_it_names(tmp_path: Path) -> None:
    """The loader's batches are the sampler's rows, gathered in one ``index_select`` (not
    ``tensor[index]``, several times slower for a batch of images) and not walked again by
    a collate pass."""
    dm = ArrayDataModule(_processed(tmp_path, "digits"), batch_size=16, seed=3)
    dm.setup("fit")
    x, y = dm.datasets["train"].tensors
    loader = dm.train_dataloader()
    order = torch.cat(list(loader.sampler))
    batches = list(loader)
    assert torch.equal(torch.cat([b[0] for b in batches]), x[order])
    assert torch.equal(torch.cat([b[1] for b in batches]), y[order])
    gathered = []
    real = torch.Tensor.index_select
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "index_select",
                   lambda t, dim, index: gathered.append(dim) or real(t, dim, index))
        next(iter(dm.train_dataloader()))
    assert gathered == [0, 0]  # images and labels, one gather each
    row = dm.datasets["train"][3]  # one row, as a TensorDataset gives it
    assert torch.equal(row[0], x[3]) and torch.equal(row[1], y[3])
