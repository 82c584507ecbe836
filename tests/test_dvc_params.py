"""dvc.yaml's params lists: every value that changes a stage's output is a dependency, and
values that only steer how the stage gets there are not (they would rerun it, and every
stage after it, for identical outputs, and crowd `dvc exp show --param-deps`)."""

from __future__ import annotations

import yaml

from tests.helpers.repo import ROOT


def _params(stage: str) -> set[str]:
    return set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["params"])


def test_download_depends_on_what_decides_the_bytes_only() -> None:
    """The dataset and the accepted digests decide data/raw; mirrors, timeout and retries
    only decide where from and how patiently (tests/data/test_download.py checks that the
    manifest is byte-identical whichever mirror served)."""
    assert _params("download") == {"data.dataset", "data.digests"}


def test_split_depends_on_every_size_and_the_seed() -> None:
    assert _params("split") == {"seed", "data.dataset", "data.val_size", "data.train_size",
                                "data.test_size"}


def test_evaluate_does_not_depend_on_the_progress_bar() -> None:
    assert _params("evaluate") == {"seed", "evaluate", "trainer.accelerator"}
