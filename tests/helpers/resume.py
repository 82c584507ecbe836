"""Interrupting a training: a repository copy that trains for EPOCHS epochs, how far its
resume checkpoint got, and waiting for it to get there."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from tests.helpers.repo import configure_tiny_digits, edit_params, make_repo_copy, run

EPOCHS = 5


def tiny_repo(dest: Path) -> Path:
    """A repository copy whose training takes about a second an epoch, for EPOCHS epochs."""
    repo = make_repo_copy(dest)
    configure_tiny_digits(repo)
    edit_params(repo / "params.yaml", {"trainer.max_epochs": EPOCHS,
                                       "callbacks.early_stopping.enabled": False})
    run(["git", "commit", "-qam", f"{EPOCHS} epochs"], repo)
    return repo


def last_epoch(repo: Path) -> int:
    """The epoch of the resume checkpoint on disk, or -1 while there is none."""
    for ckpt in (repo / ".litpipe/resume").glob("*/checkpoints/last.ckpt"):
        try:
            return int(torch.load(ckpt, weights_only=True, map_location="cpu")["epoch"])
        except Exception:  # noqa: BLE001 (being replaced right now: look again)
            return -1
    return -1


def wait_until(cond, what: str, timeout: float = 240) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def held_env(hold_dir: Path, epoch: int) -> dict[str, str]:
    """The pipeline's environment with the train stage held at the start of ``epoch`` (its
    previous epochs checkpointed) until ``hold_dir/release`` exists: a test that signals or
    edits a training there cannot race the machine's speed (training/callbacks.py)."""
    from tests.helpers.repo import pipeline_env

    return {**pipeline_env(), "LITPIPE_HOLD_AT_EPOCH": f"{epoch}:{hold_dir}"}
