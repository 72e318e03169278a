"""Device, mixed precision and seeding: one place that decides CUDA + AMP versus CPU float32.

Rule: CUDA (when present and allowed) trains under ``torch.autocast`` in float16 with a ``GradScaler``; the CPU
trains in plain float32, unless bfloat16 autocast is asked for explicitly (``amp="bf16"``), which needs no scaler.
:func:`seed_everything` seeds Python, NumPy and torch and switches torch to deterministic algorithms so that two
CPU runs with the same seed give bit-identical weights and metrics.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

__all__ = ["amp_dtype", "autocast", "grad_scaler_enabled", "make_grad_scaler", "seed_everything", "select_device"]

AmpSetting = bool | Literal["fp16", "bf16", "none"] | str | None


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cpu"`` / ``"cuda"`` / ``"cuda:1"`` as asked.

    Asking for CUDA on a machine without it is an error rather than a silent fallback: a config that says GPU
    should not quietly take days on a CPU.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} was requested but CUDA is not available; use device='auto' or 'cpu'")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:index]', got {device!r}")


def amp_dtype(device: torch.device, amp: AmpSetting) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for plain float32.

    ``amp=True`` means "use AMP where it pays": float16 on CUDA, nothing on CPU (CPU stays float32).
    ``"bf16"`` autocasts to bfloat16 on either device; ``"fp16"`` is CUDA-only; False / None / ``"none"`` is off.
    """
    if amp is None or amp is False:
        return None
    setting = "auto" if amp is True else str(amp).strip().lower()
    if setting in ("none", "false", "off", "fp32", "float32"):
        return None
    if setting in ("bf16", "bfloat16"):
        return torch.bfloat16
    if setting in ("auto", "true", "on", "fp16", "float16"):
        return torch.float16 if device.type == "cuda" else None
    raise ValueError(f"amp must be True/False or one of 'fp16', 'bf16', 'none', got {amp!r}")


@contextlib.contextmanager
def autocast(device: torch.device, amp: AmpSetting) -> Iterator[None]:
    """``torch.autocast`` for the AMP setting, or a no-op (CPU float32)."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler_enabled(device: torch.device, amp: AmpSetting) -> bool:
    """Loss scaling is needed only for float16 autocast, i.e. on CUDA (bf16 and float32 do not underflow)."""
    return device.type == "cuda" and amp_dtype(device, amp) == torch.float16


def make_grad_scaler(device: torch.device, amp: AmpSetting) -> torch.amp.GradScaler:
    """A GradScaler enabled only when :func:`grad_scaler_enabled` (a disabled scaler is a pass-through)."""
    enabled = grad_scaler_enabled(device, amp)
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); with ``deterministic`` also ask torch for deterministic kernels.

    ``warn_only=True``: an op without a deterministic kernel warns instead of failing (on CPU every op used here is
    deterministic; on CUDA a few 3D-convolution backward kernels are not). ``CUBLAS_WORKSPACE_CONFIG`` is set for
    deterministic cuBLAS when it is not set already.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if not (torch.are_deterministic_algorithms_enabled()
                and torch.is_deterministic_algorithms_warn_only_enabled()):
            torch.use_deterministic_algorithms(True, warn_only=True)  # first call imports torch._inductor (~2 s)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
