"""litpipe/catalog.py: one table per fact, read by the schema and the builders."""

from __future__ import annotations

import typing
from types import SimpleNamespace

import pytest
import torch

from litpipe.catalog import NETWORKS, OPTIMIZERS, SCHEDULERS
from litpipe.model.networks import build_network
from litpipe.schema import ModelName, OptimizerName, SchedulerName


def test_the_schema_allows_exactly_the_catalogs_names() -> None:
    assert set(typing.get_args(ModelName)) == set(NETWORKS)
    assert set(typing.get_args(OptimizerName)) == set(OPTIMIZERS)
    assert set(typing.get_args(SchedulerName)) == set(SCHEDULERS)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_builds_from_its_entry(name: str) -> None:
    entry = NETWORKS[name]
    shape = (3, 32, 32)
    net = build_network(name, shape, 10, [0.5] * 3, [0.25] * 3, channels=[8, 16],
                        convs_per_block=1, hidden=[32], dropout=0.0, latent_dim=4,
                        test_time_flip=False)
    assert isinstance(net, entry.load())
    out = net(torch.rand(2, *shape))
    assert out.shape == ((2, 10) if entry.task == "classification" else (2, *shape))
    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert convolutional == entry.convolutional  # what model.channels_last applies to


def test_a_new_network_is_one_entry_and_its_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """The builder has no branch per network: an entry naming any class is enough."""
    monkeypatch.setitem(NETWORKS, "tiny", type(NETWORKS["mlp"])(
        "tests.test_catalog:Tiny", "classification", convolutional=False))
    net = build_network("tiny", (1, 8, 8), 3, [0.0], [1.0], channels=[], convs_per_block=1,
                        hidden=[], dropout=0.0, latent_dim=1, test_time_flip=True)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    assert type(net).__name__ == "MirrorAveraged"  # a classifier: the flip applies too


class Tiny(torch.nn.Module):
    """A throwaway network for the test above."""

    def __init__(self, a: typing.Any) -> None:
        super().__init__()
        c, h, w = a.in_shape
        self.linear = torch.nn.Linear(c * h * w, a.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_configure_optimizers_builds_what_the_tables_name(optimizer: str,
                                                           scheduler: str) -> None:
    from litpipe.model.module import LitClassifier

    module = LitClassifier(network="mlp", in_shape=[1, 8, 8], classes=list("abc"),
                           mean=[0.0], std=[1.0], channels=[], convs_per_block=1, hidden=[8],
                           dropout=0.0, latent_dim=1, optimizer=optimizer, lr=0.01,
                           weight_decay=0.0, momentum=0.9, scheduler=scheduler, step_size=1,
                           gamma=0.5, label_smoothing=0.0, test_time_flip=False)
    fake = SimpleNamespace(max_epochs=3, estimated_stepping_batches=12,
                           gradient_clip_val=None)
    module._trainer = fake  # what configure_optimizers reads of the Trainer
    configured = module.configure_optimizers()
    opt = configured if SCHEDULERS[scheduler] is None else configured["optimizer"]
    assert type(opt) is OPTIMIZERS[optimizer].load()
    assert opt.param_groups[0]["lr"] == pytest.approx(
        0.01 / 25 if scheduler == "onecycle" else 0.01)  # OneCycle starts at max_lr / 25
    if optimizer == "sgd" and scheduler != "onecycle":  # OneCycle cycles the momentum
        assert opt.param_groups[0]["momentum"] == 0.9
    if SCHEDULERS[scheduler] is not None:
        sched = configured["lr_scheduler"]
        assert type(sched["scheduler"]) is SCHEDULERS[scheduler].load()
        assert sched["interval"] == SCHEDULERS[scheduler].interval
    if scheduler == "onecycle":
        assert configured["lr_scheduler"]["scheduler"].total_steps == 12
