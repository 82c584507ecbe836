"""litpipe.training.device: no CUDA probe per optimiser step on a machine without CUDA, and
the precision ``auto`` resolves to on this CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from litpipe.training.device import skip_cuda_probes

needs_no_gpu = pytest.mark.skipif(torch.cuda.device_count() > 0, reason="a CUDA device is here")


@needs_no_gpu
def test_adam_steps_do_not_look_for_the_nvidia_driver(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """What Lightning's import sets up (NVML-based checks), then Adam steps: after
    skip_cuda_probes none of them tries to load the driver library."""
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    probes = []
    real = torch.cuda._raw_device_count_nvml
    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml",
                        lambda: probes.append(1) or real())
    assert skip_cuda_probes() is True  # its own question is the last probe
    probes.clear()
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1)
    for _ in range(3):
        (w * w).sum().backward()
        opt.step()
    assert probes == []
    assert torch.cuda.is_available() is False


def test_a_users_device_list_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert skip_cuda_probes() is False
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_the_trainer_is_deterministic_without_the_nan_fill(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """deterministic=True stays on; the NaN fill of new tensors (13% of a CNN step) is off."""
    from litpipe.params import load_params
    from litpipe.training.trainer import build_trainer
    from tests.helpers.repo import ROOT

    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        build_trainer(load_params(ROOT / "params.yaml"), [], tmp_path)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(was)


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
