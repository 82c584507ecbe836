"""litpipe.training.resume: the resume id covers exactly what the train stage depends on."""

from __future__ import annotations

import yaml

from litpipe.training.resume import TRAIN_PARAMS
from tests.helpers.repo import ROOT


def test_fingerprint_covers_exactly_the_params_the_train_stage_reads() -> None:
    """The resume id must change whenever DVC would rerun train for a param, and only then."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    assert set(TRAIN_PARAMS) == set(stage["params"])


# ------------------------------------------------------------------ damaged resume state
# Issue 20, case 3: a truncated checkpoint ended every later `dvc repro` in a 17-line
# PytorchStreamReader traceback; a garbled run.json silently continued into a new MLflow run
# that held only the resumed epochs.

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from litpipe.training.resume import intact, write_verified  # noqa: E402


def test_a_verified_file_is_intact_until_damaged(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    write_verified(path, b"epoch 1")
    assert intact(path)
    write_verified(path, b"epoch 2")
    assert intact(path)
    path.write_bytes(b"epoch")  # truncated
    assert not intact(path)
    path.write_bytes(b"epoch 1")  # the previous version: a kill between digest and rename
    assert intact(path)
    (tmp_path / "other.ckpt").write_bytes(b"x")  # no digest recorded: not trusted
    assert not intact(tmp_path / "other.ckpt")


def _interrupted(processed: Path, work: Path, monkeypatch: pytest.MonkeyPatch,
                 **overrides: object) -> Path:
    """A digits training stopped at the start of epoch 3 (two epochs checkpointed), as a
    kill would leave it; the resume directory."""
    from litpipe.training.callbacks import HoldAtEpoch

    def stop(self: HoldAtEpoch, trainer: object, module: object) -> None:
        if trainer.current_epoch == self.epoch:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    monkeypatch.setenv("LITPIPE_HOLD_AT_EPOCH", f"2:{work / 'hold'}")
    monkeypatch.setattr(HoldAtEpoch, "on_train_epoch_start", stop)
    with pytest.raises(KeyboardInterrupt):
        _train(processed, work, **overrides)
    monkeypatch.delenv("LITPIPE_HOLD_AT_EPOCH")
    [resume] = [p for p in (work / ".litpipe/resume").iterdir() if p.is_dir()]
    return resume


def _train(processed: Path, work: Path, **overrides: object) -> dict:
    from litpipe.params import load_params
    from litpipe.training.train import train

    params = load_params(ROOT / "params.ci.yaml", overrides={
        "trainer.max_epochs": 4, "callbacks.early_stopping.enabled": False,
        "tracking.uri": f"sqlite:///{work / 'mlflow.db'}", **overrides})
    return train(params, processed, work / "models", work / "reports")


def _runs(work: Path) -> dict[str, tuple[str, int]]:
    """run id -> (status, how many epochs of train_loss it holds)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {r.info.run_id: (r.info.status,
                            len(client.get_metric_history(r.info.run_id, "train_loss")))
            for r in runs}


def test_every_completed_epoch_is_checkpointed_even_when_it_is_not_the_best(
        processed: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``save_last=True`` writes last.ckpt only at the epochs that improved the monitored
    metric (Lightning 2.6): a kill after one that did not lost it. With the highest val_loss
    as the "best", only epoch 0 is ever best, and last.ckpt must still hold epoch 1."""
    import torch

    resume = _interrupted(processed, work, monkeypatch, **{
        "callbacks.checkpoint.monitor": "val_loss", "callbacks.checkpoint.mode": "max"})
    ckpts = resume / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=True, map_location="cpu")
    best = torch.load(ckpts / "best.ckpt", weights_only=True, map_location="cpu")
    assert (last["epoch"], best["epoch"]) == (1, 0)


def test_a_truncated_checkpoint_resumes_from_the_newest_intact_one(
        processed: Path, work: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    resume = _interrupted(processed, work, monkeypatch)
    last = resume / "checkpoints/last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    summary = _train(processed, work)
    err = capsys.readouterr().err
    assert f"{last} is damaged" in err and "Traceback" not in err
    assert summary["epochs_run"] == 4
    [(status, epochs)] = _runs(work).values()  # the same run, continued
    assert status == "FINISHED" and epochs == 4


@pytest.mark.parametrize("damage", ["run.json", "every checkpoint"])
def test_damaged_state_starts_over_and_fails_the_old_run(
        processed: Path, work: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], damage: str) -> None:
    resume = _interrupted(processed, work, monkeypatch)
    [old] = _runs(work)
    if damage == "run.json":
        (resume / "run.json").write_text("{garbled")
    else:
        for ckpt in (resume / "checkpoints").glob("*.ckpt"):
            os.truncate(ckpt, 100)
    summary = _train(processed, work)
    err = capsys.readouterr().err
    assert "starting over in a new MLflow run" in err and "Traceback" not in err
    runs = _runs(work)
    assert runs.pop(old)[0] == "FAILED"
    [(status, epochs)] = runs.values()  # the new run holds every epoch, not a part
    assert status == "FINISHED" and epochs == 4 == summary["epochs_run"]
