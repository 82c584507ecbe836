"""The train stage's own callbacks (``litpipe.training.callbacks``): unit checks of what a
whole training would take long to show."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from litpipe.training.callbacks import ModelCheckpoint


def test_checkpoint_state_resumes_whole_current_score_included(tmp_path: Path) -> None:
    """A resumed run's checkpoints must hold what an uninterrupted run's do: Lightning's
    ModelCheckpoint drops ``current_score`` on load (tests/e2e/test_resume.py's kill -9 run
    then wrote another ``last.ckpt``)."""
    saved = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val_loss")
    saved.current_score = torch.tensor(0.1437)
    saved.best_model_score = torch.tensor(0.1437)
    state = saved.state_dict()

    resumed = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val_loss")
    resumed.load_state_dict(state)
    assert resumed.state_dict().keys() == state.keys()
    for key, value in state.items():
        assert repr(resumed.state_dict()[key]) == repr(value), key
    # Lightning keys a callback's state by its class name: checkpoints written by Lightning's
    # own class load into this one, and resume.export_checkpoint finds it by that name.
    assert resumed.state_key == LightningModelCheckpoint(
        dirpath=tmp_path, filename="best", monitor="val_loss").state_key
    assert resumed.state_key.startswith("ModelCheckpoint{")


def test_checkpoint_from_another_directory_restores_no_score(tmp_path: Path) -> None:
    """As Lightning does for the other scores: a checkpoint from another directory is
    another run's, and its scores are not this one's."""
    saved = ModelCheckpoint(dirpath=tmp_path / "a", monitor="val_loss")
    saved.current_score = torch.tensor(0.5)
    resumed = ModelCheckpoint(dirpath=tmp_path / "b", monitor="val_loss")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's "The dirpath has changed" warning
        resumed.load_state_dict(saved.state_dict())
    assert resumed.current_score is None


def test_checkpoint_builds_its_key_once_and_saves_per_step_only_when_asked(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Lightning reads ``state_key`` on every hook call; it cannot change after __init__, so
    it is built once. The per-step hook does nothing for epoch-end saving (litpipe's) and is
    Lightning's own for every_n_train_steps."""
    from lightning.pytorch.callbacks import model_checkpoint

    built = []
    real = model_checkpoint.ModelCheckpoint._generate_state_key
    monkeypatch.setattr(model_checkpoint.ModelCheckpoint, "_generate_state_key",
                        lambda self, **kw: built.append(1) or real(self, **kw))
    epochs = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss")
    assert epochs.state_key == epochs.state_key == LightningModelCheckpoint(
        dirpath=tmp_path, monitor="val_loss").state_key
    assert len(built) == 2  # this one's, once; Lightning's, once

    calls = []
    monkeypatch.setattr(LightningModelCheckpoint, "on_train_batch_end",
                        lambda self, *args: calls.append(self))
    steps = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5)
    for cb in (epochs, steps):
        cb.on_train_batch_end(None, None, None, None, 0)  # type: ignore[arg-type]
    assert calls == [steps]
