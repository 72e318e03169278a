"""Device selection, autocast dtype handling and seeding (CUDA is mocked: the CI machines have no GPU)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from omics_risk.models.device import (
    amp_dtype,
    autocast,
    grad_scaler_enabled,
    make_grad_scaler,
    seed_everything,
    select_device,
)


def test_auto_picks_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda:1")
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        select_device("tpu")


def test_amp_is_fp16_with_scaler_on_cuda_and_float32_on_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype(cpu, True) is None  # CPU stays float32
    assert amp_dtype(cuda, True) is torch.float16
    assert amp_dtype(cpu, "bf16") is torch.bfloat16 and amp_dtype(cuda, "bf16") is torch.bfloat16
    assert amp_dtype(cuda, False) is None and amp_dtype(cuda, "none") is None
    assert grad_scaler_enabled(cuda, True)
    assert not grad_scaler_enabled(cuda, "bf16") and not grad_scaler_enabled(cpu, True)
    assert not make_grad_scaler(cpu, True).is_enabled()
    with pytest.raises(ValueError, match="amp must be"):
        amp_dtype(cpu, "int8")


def test_cpu_autocast_is_a_no_op_unless_bf16_is_asked():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    cpu = torch.device("cpu")
    with autocast(cpu, True):
        assert (a @ b).dtype == torch.float32
        assert not torch.is_autocast_enabled("cpu")
    with autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32


def test_seed_everything_reseeds_every_generator():
    seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(123)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    assert torch.are_deterministic_algorithms_enabled()
