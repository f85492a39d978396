"""Process-level settings the trainer applies once: device choice, seeding, allocator.

Why the allocator: glibc returns every free of >= 128 KiB straight to the OS, and on
these machines first touch of a fresh page costs ~60 us, so a training step whose
activations are a few MiB re-faults them on every step (measured: 10x slower steps).
Raising the mmap and trim thresholds keeps freed activations in the heap for reuse.
``BENCH_MALLOC_TUNING=0`` turns this off, for measuring what an untuned process gets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys

import numpy as np
import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # bytes; glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
_TRIM_THRESHOLD = 256 * 1024 * 1024  # bytes of free heap top kept before giving memory back (caps the RSS cost)

_malloc_tuned: bool | None = None


def tune_malloc() -> bool:
    """Keep freed buffers up to 32 MiB in glibc's heap (once per process). True if applied."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("BENCH_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    _malloc_tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
    return _malloc_tuned


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} requested but CUDA is not available; use device=cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device={name!r} requested but MPS is not available; use device=cpu or auto")
    return device


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device``, or None for full fp32.

    ``auto`` picks bf16 on CUDA GPUs that support it (no loss scaling needed) and fp32 on
    CPU: without AMX, CPU bf16 kernels are slower than fp32 for nets this small.
    """
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
