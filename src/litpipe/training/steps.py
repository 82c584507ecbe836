"""How many optimiser steps the module takes in each Lightning training step.

Lightning's automatic optimisation runs about a dozen hooks, a closure and its progress
bookkeeping around every optimiser step: about half a millisecond of Python on this CPU,
as much as the seeds' MLP's whole step (batch 64), so a small model trained through it ran
at 1.3x a hand-written loop before litpipe added anything. The train stage therefore hands
the module a group of batches per Lightning step and lets it take one optimiser step per
batch itself (Lightning's manual optimisation, :meth:`litpipe.model.module.LitBase.
_grouped_steps`), with the same arithmetic in the same order: the weights come out
bit-identical (tests/test_grouped_steps.py), only Lightning's per-step cost is paid once per
group. A big model's step dwarfs that cost; grouping then changes nothing either way.

Lightning itself implements gradient clipping, gradient accumulation, Stochastic Weight
Averaging's learning-rate swap, the limits that count batches (``limit_train_batches``,
``fast_dev_run``) and the multi-process samplers around automatic optimisation, one batch
per step. A run that uses any of them keeps Lightning's loop as it is (one batch a step).
"""

from __future__ import annotations

from litpipe.config import Params

# Samples per group: 16 batches of 64, 8 of the default 128. Lightning's step cost is then
# a few percent of a small model's step, and the progress bar still moves every second.
GROUP_SAMPLES = 1024


def batches_per_step(params: Params, batch_size: int) -> int:
    """Training batches per Lightning step for ``params`` at ``batch_size`` (1: Lightning's
    own automatic optimisation)."""
    t = params.trainer
    lightning_only = (
        t.gradient_clip_val is not None
        or t.accumulate_grad_batches != 1
        or params.callbacks.swa.enabled
        # An int counts batches (1 is one batch), a float is a fraction (1.0 is all).
        or not (isinstance(t.limit_train_batches, float) and t.limit_train_batches == 1.0)
        or t.fast_dev_run not in (False, 0)
        or t.multi_device
    )
    return 1 if lightning_only else max(1, GROUP_SAMPLES // batch_size)
