"""Networks adapt to the data's shape and class count; the module's optimisers follow params."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from litpipe.model.module import build_module
from litpipe.model.networks import build_network
from litpipe.params import load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize(("shape", "classes"), [((1, 28, 28), 10), ((3, 32, 32), 10),
                                                 ((1, 8, 8), 4)])
def test_network_shapes(name: str, shape: tuple[int, int, int], classes: int) -> None:
    net = build_network(name, shape, classes, [0.5] * shape[0], [0.25] * shape[0],
                        channels=[8, 16], convs_per_block=1, hidden=[32], dropout=0.25,
                        latent_dim=4, test_time_flip=False).eval()
    out = net(torch.rand(3, *shape))
    assert out.shape == (3, classes)


def test_normalisation_is_inside_the_network() -> None:
    sizes = {"channels": [8], "convs_per_block": 1, "hidden": [16], "dropout": 0.0,
             "latent_dim": 4, "test_time_flip": False}
    a = build_network("cnn", (1, 8, 8), 3, [0.0], [1.0], **sizes).eval()
    b = build_network("cnn", (1, 8, 8), 3, [0.5], [1.0], **sizes).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if "mean" not in k},
                      strict=False)
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(a(x - 0.5), b(x), atol=1e-5)


@pytest.mark.parametrize("convs", [1, 2, 3])
def test_cnn_stacks_convs_per_block(convs: int) -> None:
    """model.convs_per_block convolutions (each with its BatchNorm) before every pool."""
    net = build_network("cnn", (1, 28, 28), 10, [0.5], [0.25], channels=[8, 16],
                        convs_per_block=convs, hidden=[32], dropout=0.0, latent_dim=4,
                        test_time_flip=False)
    convs_seen = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert [c.out_channels for c in convs_seen] == [8] * convs + [16] * convs
    assert len(pools) == 2
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_test_time_flip_answers_the_mean_of_image_and_mirror() -> None:
    """model.test_time_flip: outside training the network's softmax is the mean of the
    image's and its mirror's (what evaluate measures and the exported models compute), so a
    mirrored image gets the same answer; training sees one view."""
    torch.manual_seed(0)
    kw = {"channels": [8], "convs_per_block": 1, "hidden": [16], "dropout": 0.0,
          "latent_dim": 4}
    plain = build_network("cnn", (1, 8, 8), 3, [0.5], [0.25], test_time_flip=False, **kw)
    both = build_network("cnn", (1, 8, 8), 3, [0.5], [0.25], test_time_flip=True, **kw)
    both.load_state_dict({f"net.{k}": v for k, v in plain.state_dict().items()})
    x = torch.rand(4, 1, 8, 8)
    plain.eval(), both.eval()
    mean = (plain(x).softmax(1) + plain(x.flip(-1)).softmax(1)) / 2
    assert torch.allclose(both(x).softmax(1), mean, atol=1e-6)
    assert torch.allclose(both(x), both(x.flip(-1)), atol=1e-5)
    assert not torch.allclose(plain(x), plain(x.flip(-1)), atol=1e-3)
    plain.train(), both.train()
    assert torch.equal(both(x), plain(x))


@pytest.mark.parametrize(("dataset", "mirrored"), [("fashion_mnist", True), ("digits", False)])
def test_test_time_flip_only_where_a_mirror_keeps_the_class(dataset: str, mirrored: bool
                                                            ) -> None:
    from litpipe.model.networks import MirrorAveraged

    params = load_params(ROOT / "params.yaml", overrides={"model.test_time_flip": True})
    module = build_module(params, {"shape": [1, 8, 8], "classes": list("abc"),
                                   "mean": [0.0], "std": [1.0], "dataset": dataset})
    assert isinstance(module.net, MirrorAveraged) is mirrored


def test_label_smoothing_is_the_training_loss() -> None:
    from torch.nn import functional as F

    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml", overrides={"model.label_smoothing": 0.2})
    module = build_module(params, {"shape": [1, 8, 8], "classes": list("abc"),
                                   "mean": [0.0], "std": [1.0]})
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
                                   "mean": [0.0], "std": [1.0]})
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
                                   "mean": [0.0], "std": [1.0]})
    module.trainer = trainer()  # type: ignore[assignment]
    opt = module.configure_optimizers()
    assert opt.defaults["fused"] is fused


@pytest.mark.parametrize(("capability", "isa", "amx", "bf16", "expected"), [
    ("AVX512", None, True, False, "bf16-mixed"), ("AVX512", None, False, True, "bf16-mixed"),
    ("AVX512", None, False, False, "32-true"),
    # Kernels restricted to AVX2 on a CPU that has more (ATEN_CPU_CAPABILITY=avx2): bf16
    # would be emulated there, so auto takes fp32, as on a CPU without native bf16.
    ("AVX2", None, True, True, "32-true"), ("AVX512", "AVX2", False, True, "32-true"),
    ("AVX512", "AVX512_CORE_AMX", True, False, "bf16-mixed")])
def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, capability: str,
                                        isa: str | None, amx: bool, bf16: bool,
                                        expected: str) -> None:
    from litpipe.training.device import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    if isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("32-true", "cpu") == "32-true"  # an explicit value is kept
