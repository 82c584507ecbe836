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
from torch.utils.flop_counter import FlopCounterMode

PROBE_BATCH = 8  # images in the counted step: the count is linear in the batch size


def training_flops_per_sample(network: nn.Module, in_shape: tuple[int, ...],
                              classes: int | None) -> int:
    """FLOPs of one training step (forward, loss, backward) per image.

    Counted on a copy, so the network's weights, gradients and BatchNorm statistics stay
    untouched. ``classes`` None: a reconstruction network (MSE against its input).
    """
    probe = copy.deepcopy(network).train()
    x = torch.rand(PROBE_BATCH, *in_shape)
    with FlopCounterMode(display=False) as counter:
        out = probe(x)
        if classes is None:
            loss = F.mse_loss(out, x)
        else:
            loss = F.cross_entropy(out, torch.zeros(PROBE_BATCH, dtype=torch.long))
        loss.backward()
    return counter.get_total_flops() // PROBE_BATCH
