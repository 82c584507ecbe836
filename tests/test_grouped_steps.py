"""Several optimiser steps per Lightning step change nothing but the speed.

The train stage hands the module groups of batches when nothing needs Lightning's one-batch
loop (litpipe/training/steps.py). Here the real train stage runs each recipe twice on
scikit-learn's digits, once grouped and once through Lightning's automatic optimisation:
the weights, the optimiser state, the history and the step count must be the same bits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from litpipe.data.datamodule import ArrayDataModule, samples_in
from litpipe.params import load_params
from litpipe.training import train as train_module
from litpipe.training.steps import GROUP_SAMPLES, batches_per_step
from tests.test_techniques import BASE, ROOT
from tests.test_techniques import train as train_stage

RECIPES = {
    # fp32 MLP, Adam, a per-step schedule (OneCycle)
    "mlp-onecycle": {"model.name": "mlp", "model.hidden": [64, 32], "optimizer.name": "adam",
                     "scheduler.name": "onecycle", "trainer.precision": "32-true"},
    # the default CNN's numerics: channels-last, bf16 autocast, augmentation, and a
    # per-epoch schedule (StepLR every epoch), with dropout drawing from the global RNG
    "cnn-bf16-step": {"model.name": "cnn", "model.channels": [8, 16], "model.dropout": 0.2,
                      "trainer.precision": "bf16-mixed", "data.augment": True,
                      "scheduler.name": "step", "scheduler.step_size": 1,
                      "scheduler.gamma": 0.5},
    # reconstruction, SGD with momentum, cosine
    "autoencoder-cosine": {"model.name": "autoencoder", "model.hidden": [32],
                           "model.latent_dim": 8, "optimizer.name": "sgd",
                           "optimizer.lr": 0.05, "scheduler.name": "cosine"},
}


def _run(work: Path, processed: Path, monkeypatch: pytest.MonkeyPatch, name: str,
         grouped: bool, recipe: dict[str, object]) -> dict:
    chosen: list[int] = []

    def spy(params, batch_size):  # noqa: ANN001, ANN202
        chosen.append(batches_per_step(params, batch_size) if grouped else 1)
        return chosen[-1]

    monkeypatch.setattr(train_module, "batches_per_step", spy)
    s = train_stage(work, processed, name, **{
        "trainer.limit_train_batches": 1.0, "trainer.max_epochs": 2, **recipe})
    s["groups"] = chosen
    return s


def _checkpoint(summary: dict, name: str) -> dict:
    return torch.load(summary["dir"] / "models" / name, weights_only=True)


def _same_tensors(a: object, b: object, where: str) -> None:
    """Recursively: equal structure, and tensors equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("recipe", RECIPES)
def test_grouped_steps_train_the_same_bits(work: Path, processed: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           recipe: str) -> None:
    one = _run(work, processed, monkeypatch, "one", False, RECIPES[recipe])
    grouped = _run(work, processed, monkeypatch, "grouped", True, RECIPES[recipe])
    # digits: 1237 training images in batches of 32, i.e. 39 batches an epoch, in groups of
    # 32 and 7: a short last group too.
    assert one["groups"] == [1] and grouped["groups"] == [GROUP_SAMPLES // 32]
    assert grouped["optimizer_steps"] == one["optimizer_steps"] == 2 * 39
    for name in ("best.ckpt", "last.ckpt"):
        a, b = _checkpoint(one, name), _checkpoint(grouped, name)
        _same_tensors(a["state_dict"], b["state_dict"], f"{name} state_dict")
        _same_tensors(a["optimizer_states"], b["optimizer_states"], f"{name} optimizer")
        _same_tensors(a["lr_schedulers"], b["lr_schedulers"], f"{name} scheduler")
    history = "reports/train_history.csv"
    assert (one["dir"] / history).read_text() == (grouped["dir"] / history).read_text()


def test_what_needs_lightnings_own_loop_gets_one_batch_a_step() -> None:
    def k(**overrides: object) -> int:
        params = load_params(ROOT / "params.yaml", overrides={**BASE, **overrides})
        return batches_per_step(params, 64)

    full = {"trainer.limit_train_batches": 1.0}
    assert k(**full) == GROUP_SAMPLES // 64
    for lightning_only in ({"trainer.gradient_clip_val": 1.0},
                           {"trainer.accumulate_grad_batches": 2},
                           {"callbacks.swa.enabled": True},
                           {"trainer.limit_train_batches": 1},  # one batch, not all
                           {"trainer.limit_train_batches": 0.5},
                           {"trainer.fast_dev_run": True},
                           {"trainer.fast_dev_run": 3},
                           {"trainer.devices": 2, "trainer.strategy": "ddp"},
                           {"trainer.num_nodes": 2, "trainer.strategy": "ddp"}):
        assert k(**{**full, **lightning_only}) == 1, lightning_only
    params = load_params(ROOT / "params.yaml", overrides={**BASE, **full})
    assert batches_per_step(params, GROUP_SAMPLES * 2) == 1


def test_a_group_is_the_same_batches_in_the_same_order(processed: Path) -> None:
    plain = ArrayDataModule(processed, batch_size=32, seed=3, augment=True)
    grouped = ArrayDataModule(processed, batch_size=32, seed=3, augment=True,
                              batches_per_step=5)
    batches, groups = [], []
    for dm, out in ((plain, batches), (grouped, groups)):
        dm.setup("fit")
        dm.set_epoch(1)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        out.extend(list(loader))
    assert [len(g) for g in groups] == [5] * 7 + [4]  # 39 batches
    flat = [b for g in groups for b in g]
    assert len(flat) == len(batches)
    for (x1, y1), (x2, y2) in zip(batches, flat, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert samples_in(groups[0]) == 5 * 32 and samples_in(batches[0]) == 32
