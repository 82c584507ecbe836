"""The split stage: seeded, capped, validated, with stats that later stages rely on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from litpipe.data.processed import load_split
from litpipe.data.readers import load_digits_dataset, read_idx
from litpipe.data.split import SplitError, make_splits
from litpipe.data.split import split as split_stage
from litpipe.params import load_params
from tests.helpers.repo import ROOT



def digits_params(**data: object):
    return load_params(ROOT / "params.yaml", overrides={
        "data.dataset": "digits", "data.val_size": 100, **{f"data.{k}": v for k, v in data.items()}
    })


def test_split_is_seeded_and_disjoint() -> None:
    raw = load_digits_dataset()
    a = make_splits(digits_params(), raw)
    b = make_splits(digits_params(), raw)
    for split in ("train", "val", "test"):
        assert np.array_equal(a[split][0], b[split][0])
    assert len(a["val"][1]) == 100
    assert len(a["train"][1]) + 100 == len(raw["train"][1])
    other = make_splits(load_params(ROOT / "params.yaml", overrides={
        "data.dataset": "digits", "data.val_size": 100, "seed": 7}), raw)
    assert not np.array_equal(a["val"][0], other["val"][0])


def _numbered(n: int, n_test: int = 50) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw arrays whose every image carries its own index (two pixels, base 256) and whose
    label is a function of it, so a split can be checked sample by sample."""
    def images(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.arange(offset, offset + count)
        x = np.zeros((count, 1, 8, 8), np.uint8)
        x[:, 0, 0, 0], x[:, 0, 0, 1] = ids // 256, ids % 256
        return x, (ids % 10).astype(np.int64)

    return {"train": images(n, 0), "test": images(n_test, 60_000)}


def _ids(x: np.ndarray) -> list[int]:
    return (x[:, 0, 0, 0].astype(int) * 256 + x[:, 0, 0, 1]).tolist()


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("train_size", [None, 300])
def test_validation_never_overlaps_training(seed: int, train_size: int | None) -> None:
    """Every validation sample is absent from the training set (a leak would inflate
    val_acc and mislead early stopping and checkpointing), nothing appears twice, labels
    stay with their images, and without a cap train + val is the whole training set."""
    raw = _numbered(1000)
    params = load_params(ROOT / "params.yaml", overrides={
        "data.dataset": "digits", "data.val_size": 100, "data.train_size": train_size,
        "seed": seed})
    s = make_splits(params, raw)
    train, val = _ids(s["train"][0]), _ids(s["val"][0])
    assert len(val) == 100 and len(set(val)) == 100
    assert len(set(train)) == len(train) == (train_size or 900)
    assert not set(train) & set(val)
    if train_size is None:
        assert set(train) | set(val) == set(range(1000))
    for split in ("train", "val", "test"):
        x, y = s[split]
        assert (y == np.array(_ids(x)) % 10).all(), split
    assert set(_ids(s["test"][0])) == set(range(60_000, 60_050))


def test_caps_apply() -> None:
    raw = load_digits_dataset()
    s = make_splits(digits_params(train_size=50, test_size=30), raw)
    assert (len(s["train"][1]), len(s["val"][1]), len(s["test"][1])) == (50, 100, 30)


def test_val_size_too_large_says_why() -> None:
    raw = load_digits_dataset()
    with pytest.raises(SplitError, match=r"data.val_size = 5000.*only 1437"):
        make_splits(digits_params(val_size=5000), raw)
    # A fraction that rounds to nothing (or to everything) is as unusable as a bad count.
    with pytest.raises(SplitError, match=r"data.val_size = 0.0001 \(0 of 1437 samples\)"):
        make_splits(digits_params(val_size=0.0001), raw)
    with pytest.raises(SplitError, match=r"\(1437 of 1437 samples\)"):
        make_splits(digits_params(val_size=0.9999), raw)


@pytest.mark.parametrize(("fraction", "n", "count"), [
    (0.0833333, 60_000, 5000),  # params.yaml: Fashion-MNIST's and MNIST's historical split
    (0.0833333, 1437, 120),     # digits: 119.75, rounded half up
    (0.0833333, 50_000, 4167),  # CIFAR-10
    (0.25, 10, 3),              # 2.5: half rounds up
    (0.5, 3, 2),
])
def test_a_fraction_is_rounded_to_a_count(fraction: float, n: int, count: int) -> None:
    s = make_splits(digits_params(val_size=fraction), _numbered(n))
    assert (len(s["val"][1]), len(s["train"][1])) == (count, n - count)


def test_the_default_fraction_gives_the_same_split_as_the_count_5000() -> None:
    """params.yaml's val_size moved from 5000 to 0.0833333: on a 60000-sample training set
    (Fashion-MNIST, MNIST) the arrays are the very same, so the split stage's outputs (and
    every cached model trained on them) stay valid."""
    raw = _numbered(60_000)
    default = load_params(ROOT / "params.yaml")
    as_count = load_params(ROOT / "params.yaml", overrides={"data.val_size": 5000})
    assert isinstance(default.data.val_size, float)
    a, b = make_splits(default, raw), make_splits(as_count, raw)
    for split in ("train", "val", "test"):
        for i in (0, 1):
            assert a[split][i].tobytes() == b[split][i].tobytes(), split


def test_the_default_params_split_digits_without_an_override() -> None:
    """`dvc exp run -S data.dataset=digits` needs no size override any more."""
    params = load_params(ROOT / "params.yaml", overrides={"data.dataset": "digits"})
    s = make_splits(params, load_digits_dataset())
    assert (len(s["train"][1]), len(s["val"][1])) == (1317, 120)


def test_split_stage_writes_arrays_and_stats(tmp_path: Path) -> None:
    params = digits_params()
    (tmp_path / "raw" / "digits").mkdir(parents=True)
    stats = split_stage(params, tmp_path / "raw", tmp_path / "processed")
    on_disk = json.loads((tmp_path / "processed" / "stats.json").read_text())
    assert on_disk == stats
    assert stats["shape"] == [1, 8, 8] and stats["num_classes"] == 10
    assert sum(stats["class_counts"]["val"]) == stats["counts"]["val"] == 100
    x, y = load_split(tmp_path / "processed", "train")
    assert x.dtype == np.uint8 and x.shape[1:] == (1, 8, 8) and y.dtype == np.int64
    assert x.max() > 200  # scaled from 0..16 to 0..255
    assert len(set(stats["hashes"].values())) == 3


def test_read_idx_rejects_truncated_file(tmp_path: Path) -> None:
    header = bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2
    good = tmp_path / "good"
    good.write_bytes(header + bytes(20))
    assert read_idx(good).shape == (5, 2, 2)
    bad = tmp_path / "bad"
    bad.write_bytes(header + bytes(7))
    with pytest.raises(ValueError, match="IDX header says"):
        read_idx(bad)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "junk")
