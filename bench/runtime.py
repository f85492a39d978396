"""Process-level facts and settings: device choice, seeding, allocator, the hardware a run used.

Why the allocator: glibc returns every free of >= 128 KiB straight to the OS, and on
these machines first touch of a fresh page costs ~60 us, so a training step whose
activations are a few MiB re-faults them on every step (measured: 10x slower steps).
Raising the mmap and trim thresholds keeps freed activations in the heap for reuse.
``BENCH_MALLOC_TUNING=0`` turns this off, for measuring what an untuned process gets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # bytes; glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
_TRIM_THRESHOLD = 256 * 1024 * 1024  # bytes of free heap top kept before giving memory back (caps the RSS cost)

_malloc_tuned: bool | None = None


def tune_malloc() -> bool:
    """Keep freed buffers up to 32 MiB in glibc's heap (once per process), only where
    ``BENCH_MALLOC_TUNING=1`` asks for it. True if applied.

    Off by default: measured with repeats inside the trainer it changed nothing on either CPU
    kind here (docs/performance.md), while it can keep up to 256 MiB of freed heap.
    """
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("BENCH_MALLOC_TUNING", "0") != "1" or not sys.platform.startswith("linux"):
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
    # Natively only: older GPUs "support" bf16 by emulation, slower than fp32.
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return None


def dtype_name(dtype: torch.dtype | None) -> str:
    """``bfloat16``, ``float16`` or ``float32`` (None: no autocast)."""
    return str(dtype or torch.float32).removeprefix("torch.")


def use_device(device: torch.device) -> None:
    """Make ``device`` this process's current CUDA device, so a worker on cuda:1 allocates, syncs
    and measures there and not on cuda:0."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


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


# ---------------------------------------------------------------------------- hardware


# The CPU's name and flags are read from /proc/cpuinfo by hand: psutil (checked with 7.x) reports
# counts, frequencies and load, but neither the model name nor the ISA flags.
@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), e.g. ``AMD EPYC`` or ``Intel(R) Xeon(R) ...``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_isa() -> str:
    """The widest vector/matrix extensions the CPU has: what makes one x86 machine 5-8x faster than another."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    found = [name for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))
             if flag in flags]
    return "+".join(found) or platform.machine()


def total_memory_gib() -> float:
    return psutil.virtual_memory().total / 2**30


def hardware(device: torch.device) -> dict[str, str]:
    """What the run ran on, as flat strings: CPU model and ISA, cores, torch threads, memory, GPU.

    ``machine`` is one line that tells two machines apart; runs with different ``machine``
    values have seconds per epoch that cannot be compared directly.
    """
    info = {
        "cpu": cpu_model(),
        "cpu_isa": cpu_isa(),
        "logical_cores": str(os.cpu_count() or 0),
        "torch_threads": str(torch.get_num_threads()),
        "memory_gib": f"{total_memory_gib():.1f}",
    }
    machine = f"{info['cpu']} ({info['cpu_isa']}), {info['logical_cores']} cores, {info['memory_gib']} GiB"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = f"{props.total_memory / 2**30:.1f}"
        machine += f", {props.name}"
    info["machine"] = machine
    return info


GEMM_SIZE = 2048  # square fp32/bf16 matmul: big enough to reach the BLAS's steady rate
GEMM_SECONDS = 1.0  # per measurement; cached per machine, threads and torch build


def gemm_gflops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """The machine's dense GEMM rate (GFLOP/s) for ``dtype`` on ``device``, measured once and cached.

    The yardstick for a run's achieved GFLOP/s: the same run reaches a different share of
    an AVX2 and an AMX machine, and this share is what compares across machines.
    """
    from .data import cache_dir

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_model()} {cpu_isa()}"
    key = f"{name}|{device.type}|{dtype}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    path = cache_dir() / "machine" / "gemm.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return float(known[key])
    rate = measure_gemm(device, dtype)
    known[key] = rate
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return rate


def measure_gemm(device: torch.device, dtype: torch.dtype) -> float:
    """Dense n x n matmuls for GEMM_SECONDS; GFLOP/s (no cache: ``gemm_gflops`` caches)."""
    n = GEMM_SIZE
    # Its own generator, so measuring never moves the global RNG a seeded run depends on.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.float32, generator=gen).to(dtype)
    b = torch.randn(n, n, device=device, dtype=torch.float32, generator=gen).to(dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < GEMM_SECONDS:
        torch.mm(a, b)
        reps += 1
        sync()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process: it exists
        return True
