"""The datasets litpipe knows: files, digests, image shape, class names, normalisation.

A dataset is described once, here, and every stage reads that description instead of
hard-coding numbers. Torch-free, so the download stage starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RawFile:
    """One file a dataset needs, as published on its mirrors.

    ``remote`` is the name on the mirror; ``local`` the name it gets under
    ``data/raw/<dataset>/`` once verified (decompressed for ``.gz`` files).
    ``sha256`` is the SHA-256 of the *decompressed* content where known (it does not depend
    on how a mirror compressed the file); ``md5`` is the upstream-published digest of the
    archive as served, used where no content digest is known.
    """

    remote: str
    local: str
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about one dataset."""

    name: str
    shape: tuple[int, int, int]  # C, H, W
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: tuple[RawFile, ...] = field(default=())
    # Whether an image's mirror shows the same class (a coat, a cat; not a 2 or a 7): the
    # training then mirrors images at random, and a classifier may answer with the mean of
    # an image's and its mirror's probabilities (model.test_time_flip).
    mirror_symmetric: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    mirror_symmetric=True,
    shape=(1, 28, 28),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    mean=(0.2860,),
    std=(0.3530,),
    files=(
        # SHA-256 of the decompressed IDX content, computed from Debian's
        # dataset-fashion-mnist package (its .gz bytes differ from upstream's, the
        # content does not).
        RawFile("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte",
                sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        RawFile("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte",
                sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        RawFile("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte",
                sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        RawFile("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte",
                sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
)

MNIST = DatasetSpec(
    name="mnist",
    shape=(1, 28, 28),
    classes=tuple(str(i) for i in range(10)),
    mean=(0.1307,),
    std=(0.3081,),
    files=(
        # Upstream MD5s of the archives, as listed in torchvision's MNIST source.
        RawFile("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte",
                md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RawFile("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte",
                md5="d53e105ee54ea40749a09fcbcd1e9432"),
        RawFile("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte",
                md5="9fb629c4189551a2d022fa330f9573f3"),
        RawFile("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte",
                md5="ec29112dd5afa0611ce80d1b7f02629c"),
    ),
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    mirror_symmetric=True,
    shape=(3, 32, 32),
    classes=("airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"),
    # The CIFAR-10 seed normalises with (0.5, 0.5, 0.5) per channel.
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    files=(
        # Upstream MD5 of the python tarball, as listed in torchvision's CIFAR10 source.
        RawFile("cifar-10-python.tar.gz", "cifar-10-batches-py",
                md5="c58f30108f718f92721af3b95e74349a"),
    ),
)

DIGITS = DatasetSpec(
    name="digits",
    shape=(1, 8, 8),
    classes=tuple(str(i) for i in range(10)),
    mean=(0.3047,),
    std=(0.3753,),
    files=(),  # bundled inside scikit-learn's wheel: nothing to download
)

REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in (FASHION_MNIST, MNIST, CIFAR10, DIGITS)}


def get_spec(name: str) -> DatasetSpec:
    """Return the spec of ``name``; config validation guarantees it exists."""
    return REGISTRY[name]
