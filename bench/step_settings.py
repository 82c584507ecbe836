"""The CPU-dependent settings, measured: one training step of the default network under each.

For the network ``params.yaml`` describes (batch ``data.batch_size``, AdamW, fused), times a
training step in every combination of memory format (contiguous, channels-last),
deterministic algorithms (on, off) and precision (fp32, and bf16 autocast where the kernels
compute it natively), the variants alternating in one process so that drift in the
machine's speed hits all of them alike. Prints one JSON line: the median step in ms per
variant, the CPU capability, and the step's FLOPs.

    python bench/step_settings.py                       # this CPU as it is
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python bench/step_settings.py                   # the AVX2 path
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from litpipe.model.networks import build_network
from litpipe.params import load_params
from litpipe.training.device import cpu_computes_bf16
from litpipe.training.flops import training_flops_per_sample

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    args = ap.parse_args()
    p = load_params(ROOT / "params.yaml")
    m, batch = p.model, p.data.batch_size
    assert isinstance(batch, int)
    precisions = ["fp32", "bf16"] if cpu_computes_bf16() else ["fp32"]
    variants = list(itertools.product(("contiguous", "channels_last"), (True, False),
                                      precisions))
    setups = {}
    for fmt, det, prec in variants:
        torch.manual_seed(0)
        net = build_network(m.name, (1, 28, 28), 10, [0.29], [0.35], m.channels,
                            m.convs_per_block, m.hidden, m.dropout, m.latent_dim,
                            m.test_time_flip)
        mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        net = net.to(memory_format=mf)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
        x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=mf)
        y = torch.randint(0, 10, (batch,))
        setups[(fmt, det, prec)] = (net, opt, x, y)

    def step(key: tuple[str, bool, str]) -> None:
        net, opt, x, y = setups[key]
        torch.use_deterministic_algorithms(key[1])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=key[2] == "bf16"):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    torch.utils.deterministic.fill_uninitialized_memory = False  # as the train stage runs
    times: dict[tuple[str, bool, str], list[float]] = {k: [] for k in variants}
    for key in variants:  # warm-up: oneDNN builds its kernels on the first calls
        for _ in range(3):
            step(key)
    for _ in range(args.rounds):
        for key in variants:
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step(key)
                times[key].append(time.perf_counter() - t0)
    flops = training_flops_per_sample(setups[variants[0]][0], (1, 28, 28), 10) * batch
    print(json.dumps({
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(), "batch": batch, "step_gflop": flops / 1e9,
        "median_step_ms": {f"{fmt} det={det} {prec}": round(statistics.median(t) * 1e3, 2)
                           for (fmt, det, prec), t in times.items()}}))


if __name__ == "__main__":
    main()
