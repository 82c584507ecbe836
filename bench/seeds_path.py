"""The tutorials' way of training a classifier, the baseline litpipe must outclass.

torchvision's FashionMNIST dataset (PIL image per sample, ``transforms.ToTensor``), a
DataLoader that collates samples one by one, and a LightningModule with ``self.log`` each
step under Lightning's defaults (progress bar, default logger, checkpointing). Same model,
batch size, optimiser and validation set size as litpipe's benchmark run. Prints one JSON
line: the wall time of each epoch (validation included).

    python bench/seeds_path.py --raw data/raw/fashion_mnist --epochs 2 --batch 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms


class Seeds(L.LightningModule):
    def __init__(self, hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201 (tutorial style)
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        self.log("train_acc", (logits.argmax(1) == y).float().mean())
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class EpochTimer(L.Callback):
    """Wall time from one training epoch's start to its end, validation included."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.times.append(time.perf_counter() - self._t0)


def epochs(raw_dir: Path, n: int, batch: int = 64, hidden: tuple[int, ...] = (256, 128)
           ) -> tuple[list[float], float]:
    """Fit a fresh model for ``n`` epochs the tutorials' way: each epoch's wall time, and
    the last validation accuracy (bench/loop_alternation.py calls this between the other
    paths' epochs)."""
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as root:
        # torchvision looks for <root>/FashionMNIST/raw/<the uncompressed IDX files>.
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for f in raw_dir.resolve().glob("*-ubyte"):
            (raw / f.name).symlink_to(f)
        full = datasets.FashionMNIST(root, train=True, transform=transforms.ToTensor())
        train, val = random_split(full, [len(full) - 5000, 5000],
                                  generator=torch.Generator().manual_seed(0))
        timer = EpochTimer()
        trainer = L.Trainer(max_epochs=n, accelerator="cpu", devices=1,
                            callbacks=[timer], default_root_dir=root)
        trainer.fit(Seeds(list(hidden)), DataLoader(train, batch_size=batch, shuffle=True),
                    DataLoader(val, batch_size=batch))
    return timer.times, float(trainer.callback_metrics["val_acc"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", type=Path, default=Path("data/raw/fashion_mnist"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", default="256,128")
    args = ap.parse_args()
    times, acc = epochs(args.raw, args.epochs, args.batch,
                        tuple(int(h) for h in args.hidden.split(",")))
    print(json.dumps({"epoch_s": times, "val_acc": acc}))


if __name__ == "__main__":
    main()
