"""The training compute of a recipe, counted in FLOPs: a cost that no machine changes.

Seconds depend on the CPU, its vector units and whatever else runs beside the training;
FLOPs depend only on the network, the image size, the samples and the epochs. The train
stage counts them with PyTorch's own counter (``torch.utils.flop_counter``, which counts the
matrix products and convolutions, forward and backward, as ``2 × multiply-adds``) and logs
them with the run, so runs on different machines compare by cost too.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

aten = torch.ops.aten

PROBE_BATCH = 8  # images in the counted step: the count is linear in the batch size


def _conv_backward_flops(grad_out_shape: list[int], x_shape: list[int], w_shape: list[int],
                         _bias: object, _stride: object, _padding: object, _dilation: object,
                         transposed: bool, _output_padding: object, _groups: int,
                         output_mask: list[bool], out_shape: object, **_: object) -> int:
    """A convolution's backward: the input's gradient and the weight's each cost what the
    forward costs (``w_shape`` holds the input channels of one group).

    PyTorch's own formula leaves the groups out of the backward ("I skip those for the sake
    of brevity", torch/utils/flop_counter.py), which counts a depthwise convolution's
    backward as a dense one's, ``channels`` times too many; for ``groups=1`` both agree
    (tests/training/test_flops.py).
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def counter() -> FlopCounterMode:
    """PyTorch's FLOP counter, with the grouped-convolution backward counted right."""
    return FlopCounterMode(display=False,
                           custom_mapping={aten.convolution_backward: _conv_backward_flops})


def training_flops_per_sample(network: nn.Module, in_shape: tuple[int, ...],
                              classes: int | None) -> int:
    """FLOPs of one training step (forward, loss, backward) per image.

    Counted on a copy, so the network's weights, gradients and BatchNorm statistics stay
    untouched. ``classes`` None: a reconstruction network (MSE against its input).
    """
    probe = copy.deepcopy(network).train()
    x = torch.rand(PROBE_BATCH, *in_shape)
    with counter() as count:
        out = probe(x)
        if classes is None:
            loss = F.mse_loss(out, x)
        else:
            loss = F.cross_entropy(out, torch.zeros(PROBE_BATCH, dtype=torch.long))
        loss.backward()
    return count.get_total_flops() // PROBE_BATCH
