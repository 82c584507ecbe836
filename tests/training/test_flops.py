"""litpipe.training.flops: the training FLOPs the train stage logs, counted right."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from litpipe.training.flops import counter, training_flops_per_sample


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_a_convolutions_backward_costs_twice_its_forward(groups: int) -> None:
    conv = nn.Conv2d(16, 32, 3, padding=1, groups=groups, bias=False)
    x = torch.rand(2, 16, 10, 10, requires_grad=True)
    with counter() as fwd:
        y = conv(x)
    with counter() as both:
        conv(x).sum().backward()
    forward = 2 * 2 * 32 * (16 // groups) * 9 * 100  # 2 FLOPs a multiply-add
    assert fwd.get_total_flops() == forward
    assert both.get_total_flops() == 3 * forward  # forward, input grad, weight grad
    if groups == 1:  # PyTorch's own formula agrees where it has no groups to leave out
        with FlopCounterMode(display=False) as torch_count:
            conv(x).sum().backward()
        assert torch_count.get_total_flops() == both.get_total_flops()
    del y


def test_training_flops_per_sample_leaves_the_network_untouched() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flops = training_flops_per_sample(net, (1, 8, 8), classes=3)
    conv = 2 * 4 * 9 * 36
    linear = 2 * 144 * 3
    # first layer: no input gradient; the linear layer: input and weight gradients
    assert flops == conv * 2 + linear * 3
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
