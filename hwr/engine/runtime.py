"""Process-level settings that decide throughput (the allocator, the inductor cache, threads, TF32), and the device
helpers (which device ``auto`` means, a device-neutral synchronise, a device's name).

glibc's default malloc maps and unmaps large activation buffers every step (they exceed its mmap threshold),
which halves throughput and makes it swing between runs (docs/architecture.md, measured facts).
``tune_allocator`` keeps freed memory in the heap instead. These functions take their settings as arguments and
read no environment: process start-up (``hwr.cli.environment.start``, which the CLI, the benchmarks and the tests
call) reads ``HWR_THREADS``, ``HWR_NO_MALLOPT`` and ``TORCHINDUCTOR_CACHE_DIR`` and passes them here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hwr.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "configure",
    "device_name",
    "inductor_cache_path",
    "quiet_cuda_home_warning",
    "resolve_device",
    "set_inductor_cache",
    "set_tf32",
    "synchronize",
    "tune_allocator",
]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_allocator() -> bool:
    """Stop glibc from returning activation buffers to the OS each step; True if applied."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    return bool(ok)


def inductor_cache_path() -> Path:
    """The inductor cache this process compiles into (torch's own answer: ``TORCHINDUCTOR_CACHE_DIR`` when set,
    else its default); autotune keeps its choices there."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir())


def set_inductor_cache(path: str | os.PathLike) -> Path:
    """Make ``path`` the inductor cache of this process and of the processes it starts (it is exported as
    ``TORCHINDUCTOR_CACHE_DIR``, which inductor and child processes read). Process start-up only: library code,
    ``hwr.engine.train.compile`` included, never writes the environment."""
    path = Path(path).expanduser()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def configure(*, threads: int = 0, malloc: bool = True, inductor_cache: str | os.PathLike | None = None) -> None:
    """Apply the process settings once at start, before the first step runs: the tuned allocator (``malloc``),
    the shared inductor cache (``inductor_cache``, None: torch's own), torch's intra-op ``threads`` (0: as set;
    study workers on one machine split the cores this way)."""
    if malloc:
        tune_allocator()
    if inductor_cache is not None:
        set_inductor_cache(inductor_cache)
    quiet_cuda_home_warning()
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def quiet_cuda_home_warning() -> None:
    """Silence the one warning a CUDA build of torch logs on a machine without CUDA whenever inductor builds a
    C++ kernel (``No CUDA runtime is found, using CUDA_HOME=...``): it is expected on a CPU-only machine and says
    nothing about the run. Only that logger record is dropped; every other warning still shows."""
    import logging

    class _NoCudaHome(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No CUDA runtime is found" not in record.getMessage()

    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaHome) or type(f).__name__ == "_NoCudaHome" for f in log.filters):
        log.addFilter(_NoCudaHome())


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the first CUDA GPU when one is usable, else the CPU; any other spec (``cpu``, ``cuda``,
    ``cuda:1``, ``meta``) as given, refused with a clear message when this machine lacks it."""
    import torch

    if str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise InputError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r} asked for, but torch sees no CUDA GPU here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type in ("mps", "xpu"):
        backend = getattr(torch.backends, "mps", None) if device.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise InputError(
                f"device {spec!r} asked for, but this torch build or machine has no {device.type.upper()} "
                "device; use --device cpu or auto"
            )
    return device


def synchronize(device: str | torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS, XPU); a no-op on the CPU and ``meta``. Timing code
    calls it before reading the clock; a loop should call it once per timed span, never per step."""
    import torch

    device = torch.device(device)
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu
    if device.type in ("cuda", "xpu"):
        backend.synchronize(device)
    elif device.type == "mps":
        backend.synchronize()


def set_tf32(enabled: bool) -> None:
    """Let CUDA float32 matmuls and convolutions use TF32 tensor cores (10-bit mantissa products, float32 sums):
    several times the float32 rate on Ampere and later, results change by ~1e-3 relative. Process-wide."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")


def device_name(device: str | torch.device) -> str:
    """A short description of the machine kind behind ``device`` (GPU name, or the CPU model): what a measured
    figure or an autotuned choice belongs to."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"
