"""LightningDataModule over the split stage's ``.npy`` arrays.

Images stay uint8 tensors in memory (no per-sample PIL decode); conversion to float and
augmentation happen on whole batches in ``on_after_batch_transfer``, which is both faster on
CPU and runs on the GPU when there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from litpipe.data.pixels import to_unit_range
from litpipe.data.processed import load_split, load_stats


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift] (zero pad).

    Done with one padded copy and a gather of per-sample windows: no Python loop per image.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)  # n×h
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)  # n×w
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class ArrayDataModule(L.LightningDataModule):
    """Serves ``data/processed/{train,val,test}_{x,y}.npy`` as (float image, label) batches."""

    def __init__(self, processed_dir: str | Path, batch_size: int = 128, num_workers: int = 0,
                 seed: int = 42, augment: bool = False, eval_batch_size: int | None = None
                 ) -> None:
        super().__init__()
        self.processed_dir = Path(processed_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.stats = load_stats(self.processed_dir)
        self.datasets: dict[str, TensorDataset] = {}
        # Dedicated generator: augmentation draws do not disturb the global RNG stream.
        self._aug_gen = torch.Generator().manual_seed(seed)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)
                  }.get(stage or "", ("train", "val", "test"))
        for split in wanted:
            if split not in self.datasets:
                x, y = load_split(self.processed_dir, split)
                self.datasets[split] = TensorDataset(torch.from_numpy(np.array(x)),
                                                     torch.from_numpy(np.array(y)))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch = self.batch_size if split == "train" else self.eval_batch_size
        return DataLoader(
            self.datasets[split], batch_size=batch, shuffle=shuffle,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, list | tuple):  # the model summary's example input
            return batch
        x, y = batch
        x = to_unit_range(x)
        trainer = self.trainer
        if self.augment and trainer is not None and trainer.training:
            x = random_shift(x, max_shift=max(1, x.shape[-1] // 14), generator=self._aug_gen)
            if self.stats["dataset"] in ("fashion_mnist", "cifar10"):
                x = random_hflip(x, generator=self._aug_gen)
        return x, y
