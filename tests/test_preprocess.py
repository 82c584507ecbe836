"""The split stage: seeded, capped, validated, with stats that later stages rely on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from litpipe.config import load_params
from litpipe.data.processed import load_split
from litpipe.data.readers import load_digits_dataset, read_idx
from litpipe.data.split import SplitError, make_splits
from litpipe.data.split import split as split_stage

ROOT = Path(__file__).resolve().parents[1]


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


def test_caps_apply() -> None:
    raw = load_digits_dataset()
    s = make_splits(digits_params(train_size=50, test_size=30), raw)
    assert (len(s["train"][1]), len(s["val"][1]), len(s["test"][1])) == (50, 100, 30)


def test_val_size_too_large_says_why() -> None:
    raw = load_digits_dataset()
    with pytest.raises(SplitError, match=r"data.val_size = 5000.*only 1437"):
        make_splits(digits_params(val_size=5000), raw)


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
