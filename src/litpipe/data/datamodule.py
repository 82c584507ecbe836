"""LightningDataModule over the split stage's ``.npy`` arrays.

Images stay uint8 tensors in memory (no per-sample decode). The sampler hands the
DataLoader a whole batch of indices at a time and the tensors are indexed once per batch
(``batch_size=None``), instead of once per sample followed by a collate; conversion to float
and augmentation happen on whole batches in ``on_after_batch_transfer``, which also runs on
the GPU when there is one.

**Randomness is a function of (seed, epoch).** The shuffle order and the augmentation draws
of epoch ``e`` are seeded from ``epoch_seed(seed, e)`` when the epoch starts, not carried
over from earlier epochs. A run resumed at epoch ``e`` from a checkpoint therefore sees
exactly the batches an uninterrupted run sees, without saving any generator state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from litpipe.data.pixels import to_unit_range
from litpipe.data.processed import load_split, load_stats
from litpipe.data.datasets import get_spec


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """A 32-bit seed for one random ``stream`` ("shuffle", "augment", "dropout") of one epoch.

    ``SeedSequence`` mixes its inputs, so neighbouring seeds or epochs do not give related
    streams.
    """
    key = int.from_bytes(stream.encode(), "little")
    return int(np.random.SeedSequence([seed, epoch, key]).generate_state(1)[0])


class EpochBatches(Sampler[torch.Tensor]):
    """Index batches for one epoch: ``0..n-1``, shuffled by ``(seed, epoch)`` if asked, cut
    into ``batch_size`` pieces. Lightning calls :meth:`set_epoch` before each epoch (as it
    does for a DistributedSampler)."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):  # noqa: ANN204 (an iterator of index tensors)
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, "shuffle"))
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        yield from order.split(self.batch_size)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift] (zero pad).

    Done with one padded copy and a gather of per-sample windows: no Python loop per image.
    (torchvision's ``transforms.v2`` draws one set of parameters per call, so on a batch it
    would shift every image the same way.)
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


class BatchTensors(TensorDataset):
    """A TensorDataset indexed by a whole batch of row numbers at a time.

    ``index_select`` gathers the rows; ``tensor[index]`` (TensorDataset's way) goes through
    PyTorch's general advanced indexing, several times slower for a batch of images: a
    measurable share of a small model's step (docs/performance.md). Same rows, same bytes.
    """

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, ...]:
        if isinstance(index, torch.Tensor) and index.dim() == 1:
            return tuple(t.index_select(0, index) for t in self.tensors)
        return super().__getitem__(index)


def as_indexed(batch: Any) -> Any:
    """The DataLoader's collate function: the dataset's batch as it is.

    TensorDataset already returns whole-batch tensors; PyTorch's default for unbatched
    loading walks them again converting nothing, once a step. A module-level function, so
    worker processes can pickle it.
    """
    return batch


class ArrayDataModule(L.LightningDataModule):
    """Serves ``data/processed/{train,val,test}_{x,y}.npy`` as (float image, label) batches."""

    def __init__(self, processed_dir: str | Path, batch_size: int = 128, num_workers: int = 0,
                 seed: int = 42, augment: bool = False, max_shift: int = 0,
                 eval_batch_size: int | None = None,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.processed_dir = Path(processed_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.max_shift = max_shift  # pixels; 0: flips only
        self.channels_last = channels_last
        self.stats = load_stats(self.processed_dir)
        self.datasets: dict[str, TensorDataset] = {}
        # Dedicated generator, reseeded each epoch: augmentation draws neither disturb nor
        # depend on the global RNG stream.
        self._aug_gen = torch.Generator().manual_seed(epoch_seed(seed, 0, "augment"))

    def set_epoch(self, epoch: int) -> None:
        """Reseed the augmentation for ``epoch`` (called when each training epoch starts)."""
        self._aug_gen.manual_seed(epoch_seed(self.seed, epoch, "augment"))

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)
                  }.get(stage or "", ("train", "val", "test"))
        for split in wanted:
            if split not in self.datasets:
                x, y = load_split(self.processed_dir, split)
                self.datasets[split] = BatchTensors(torch.from_numpy(np.array(x)),
                                                    torch.from_numpy(np.array(y)))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch = self.batch_size if split == "train" else self.eval_batch_size
        dataset = self.datasets[split]
        sampler = EpochBatches(len(dataset), batch, self.seed, shuffle)
        # batch_size=None: the sampler yields whole index batches and TensorDataset indexes
        # each tensor once per batch. The generator only seeds worker processes; passing one
        # keeps the DataLoader from drawing that seed from the global RNG.
        return DataLoader(
            dataset, batch_size=None, sampler=sampler, collate_fn=as_indexed,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def transfer_batch_to_device(self, batch: Any, device: torch.device,
                                 dataloader_idx: int) -> Any:
        # The DataLoader's tensors are in host memory already: on the CPU, Lightning's walk
        # over the batch calling .to("cpu") on each tensor (a no-op) is skipped. (Here, not
        # on the LightningModule: Lightning warns when the module overrides it beside a
        # DataModule.)
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, list | tuple):  # the model summary's example input
            return batch
        x, y = batch
        x = to_unit_range(x)
        trainer = self.trainer
        if self.augment and trainer is not None and trainer.training:
            x = random_shift(x, max_shift=self.max_shift, generator=self._aug_gen)
            if get_spec(self.stats["dataset"]).mirror_symmetric:
                x = random_hflip(x, generator=self._aug_gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y
