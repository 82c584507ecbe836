"""litpipe.training.device: no CUDA probe per optimiser step on a machine without CUDA."""

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
    from litpipe.training.train import build_trainer
    from tests.conftest import ROOT

    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        build_trainer(load_params(ROOT / "params.yaml"), [], tmp_path)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(was)
