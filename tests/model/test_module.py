"""litpipe.model.module: the LightningModule built from params: its network, its training
loss, and the optimisers and schedulers it configures."""

from __future__ import annotations

import pytest
import torch

from litpipe.model.module import build_module
from litpipe.params import load_params
from tests.helpers.repo import ROOT


@pytest.mark.parametrize(("dataset", "mirrored"), [("fashion_mnist", True), ("digits", False)])
def test_test_time_flip_only_where_a_mirror_keeps_the_class(dataset: str, mirrored: bool
                                                            ) -> None:
    from litpipe.model.networks import MirrorAveraged

    params = load_params(ROOT / "params.yaml", overrides={"model.test_time_flip": True})
    stats = {"shape": [1, 8, 8], "classes": list("abc"), "mean": [0.0], "std": [1.0],
             "dataset": dataset}
    module = build_module(params, stats, params.optimizer.lr)
    assert isinstance(module.net, MirrorAveraged) is mirrored


def test_label_smoothing_is_the_training_loss() -> None:
    from torch.nn import functional as F

    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml", overrides={"model.label_smoothing": 0.2})
    module = build_module(params, {"shape": [1, 8, 8], "classes": list("abc"),
                                   "mean": [0.0], "std": [1.0]}, params.optimizer.lr)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    loss = module._step_loss((x, y))
    logits = module(x)  # training mode, the same batch: the same logits
    assert torch.allclose(loss, F.cross_entropy(logits, y, label_smoothing=0.2))
    assert not torch.allclose(loss, F.cross_entropy(logits, y))


class _FakeTrainer:
    """What configure_optimizers reads from the Trainer (cosine: epochs; onecycle: steps)."""

    max_epochs = 3
    estimated_stepping_batches = 30


@pytest.mark.parametrize(("optimizer", "scheduler"), [("sgd", "step"), ("adam", "cosine"),
                                                       ("adamw", "none"),
                                                       ("adamw", "onecycle")])
def test_configure_optimizers_follows_params(optimizer: str, scheduler: str) -> None:
    params = load_params(ROOT / "params.yaml", overrides={
        "optimizer.name": optimizer, "scheduler.name": scheduler, "optimizer.lr": 0.01})
    module = build_module(params, {"shape": [1, 8, 8], "classes": list("abc"),
                                   "mean": [0.0], "std": [1.0]}, params.optimizer.lr)
    module.trainer = _FakeTrainer()  # type: ignore[assignment]
    conf = module.configure_optimizers()
    opt = conf if isinstance(conf, torch.optim.Optimizer) else conf["optimizer"]
    assert type(opt).__name__.lower() == optimizer
    if scheduler != "onecycle":  # one-cycle starts low and peaks at optimizer.lr
        assert opt.param_groups[0]["lr"] == 0.01
    if scheduler == "none":
        assert isinstance(conf, torch.optim.Optimizer)
    else:
        expected = {"step": "StepLR", "cosine": "CosineAnnealingLR",
                    "onecycle": "OneCycleLR"}[scheduler]
        sched = conf["lr_scheduler"]["scheduler"]
        assert type(sched).__name__ == expected
    if scheduler == "onecycle":
        # One-cycle sets the rate itself, peaking at max_lr: that peak is optimizer.lr.
        assert sched.optimizer.param_groups[0]["max_lr"] == 0.01
        assert sched.total_steps == _FakeTrainer.estimated_stepping_batches
    if scheduler == "cosine":
        assert sched.T_max == _FakeTrainer.max_epochs


class _ClippingTrainer(_FakeTrainer):
    gradient_clip_val = 1.0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize(("trainer", "fused"), [(_FakeTrainer, True), (_ClippingTrainer, None)])
def test_optimizers_are_fused_unless_gradients_are_clipped(optimizer: str, trainer: type,
                                                           fused: bool | None) -> None:
    """Fused kernels are faster; Lightning refuses to clip gradients with them under mixed
    precision, so a clipping run gets PyTorch's per-tensor loop."""
    params = load_params(ROOT / "params.yaml", overrides={"optimizer.name": optimizer,
                                                         "scheduler.name": "none"})
    module = build_module(params, {"shape": [1, 8, 8], "classes": list("abc"),
                                   "mean": [0.0], "std": [1.0]}, params.optimizer.lr)
    module.trainer = trainer()  # type: ignore[assignment]
    opt = module.configure_optimizers()
    assert opt.defaults["fused"] is fused


def test_a_training_step_skips_nn_modules_attribute_bookkeeping(tmp_path) -> None:  # noqa: ANN001
    """Lightning sets ``_current_fx_name`` around every hook call, and the step records its
    gradient norm: neither goes through ``nn.Module.__setattr__``'s registry checks (a
    share of a small model's step), and both still read back."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    params = load_params(ROOT / "params.yaml", overrides={"model.name": "mlp",
                                                          "model.hidden": [8]})
    stats = {"shape": [1, 4, 4], "classes": list("abc"), "mean": [0.0], "std": [1.0]}
    module = build_module(params, stats, 0.01)
    data = TensorDataset(torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,)))
    seen: list[str] = []
    real = torch.nn.Module.__setattr__

    def spy(self: torch.nn.Module, name: str, value: object) -> None:
        seen.append(name)
        real(self, name, value)

    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Module, "__setattr__", spy)
        trainer.fit(module, DataLoader(data, batch_size=8))
    assert not {"_current_fx_name", "grad_norm", "grad_norm_max"} & set(seen)
    assert module.grad_norm > 0 and module.grad_norm_max >= module.grad_norm
    module.extra = torch.nn.Linear(2, 2)  # everything else is still registered
    assert "extra.weight" in dict(module.named_parameters())


def test_zero_dropout_is_no_layer_and_checkpoints_load_either_way() -> None:
    from torch import nn

    stats = {"shape": [1, 8, 8], "classes": list("abc"), "mean": [0.0], "std": [1.0]}
    build = {p: build_module(load_params(ROOT / "params.yaml",
                                         overrides={"model.dropout": p}), stats, 0.01)
             for p in (0.0, 0.3)}
    layers = {p: [type(m) for m in module.modules()] for p, module in build.items()}
    assert nn.Dropout not in layers[0.0] and nn.Dropout in layers[0.3]
    build[0.0].load_state_dict(build[0.3].state_dict())  # no weights in either
