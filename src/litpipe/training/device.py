"""What this machine can compute with: bf16 or fp32, and whether CUDA is there at all.

Both answers depend on the machine, not on params: runs on different hardware differ, and
the train stage records what it chose in the run's tags.
"""

from __future__ import annotations

import os

import torch


def resolve_precision(precision: str, accelerator: str) -> str:
    """``trainer.precision``, with ``auto`` made concrete for this machine.

    bf16 autocast pays off only where the hardware computes bf16 natively: a CUDA GPU that
    supports it, or a CPU with AMX or AVX-512 BF16 (where it roughly halved the default
    CNN's step time). Elsewhere bf16 is emulated and slower than fp32, so ``auto`` falls back
    to ``32-true``. The result differs by machine; the run's tags record it.
    """
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_computes_bf16() else "32-true"


def cpu_computes_bf16() -> bool:
    """Whether this process's CPU kernels compute bf16 natively.

    The processor's flags are not enough: ``ATEN_CPU_CAPABILITY=avx2`` (and
    ``ONEDNN_MAX_CPU_ISA=AVX2``) restrict PyTorch's and oneDNN's kernels to AVX2 on a CPU that
    has more, which is how a machine, a user or a test runs the path that CPUs without native
    bf16 take. Under such a restriction bf16 is emulated, several times slower than fp32.
    """
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in ("ALL", "DEFAULT") and not isa.startswith(("AVX512", "AVX10")):
        return False
    return any(getattr(torch.cpu, name, lambda: False)()
               for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def skip_cuda_probes() -> bool:
    """On a machine without a CUDA device, say so once (``CUDA_VISIBLE_DEVICES=""``) so that
    PyTorch stops looking for one on every optimiser step; return whether it did.

    Why: importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (to keep forked
    DataLoader workers safe), and with it every ``torch.cuda.is_available()`` tries to load
    the NVIDIA driver library again; Adam and AdamW ask before each step. With PyPI's
    CUDA-enabled torch on a CPU-only machine that is a library load per step, a large share
    of a small model's step. An empty device list answers the same question (no CUDA) without
    touching the library. A machine with a GPU, or a user who set the variable, is left as is.
    """
    if "CUDA_VISIBLE_DEVICES" in os.environ or torch.cuda.device_count() > 0:
        return False
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return True


def deterministic_without_fill() -> None:
    """Keep ``torch.use_deterministic_algorithms(True)`` (which ``Trainer(deterministic=True)``
    sets) but stop it filling every new tensor with NaN before use.

    The fill is a debugging aid: it makes a read of memory nothing wrote show up as NaN,
    instead of as whatever was there. litpipe's kernels write before they read, and the
    pipeline's tests compare outputs byte for byte across runs, which such a read would
    break. The fill is about 200 ``fill_`` calls a step of the default CNN, a measurable
    share of it (docs/performance.md).
    """
    torch.utils.deterministic.fill_uninitialized_memory = False
