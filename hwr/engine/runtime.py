"""Process-level settings that decide throughput (the allocator, the inductor cache, TF32), the device helpers
(which device ``auto`` means, a device-neutral synchronise), and the data settings the CLI reads from the
environment (``data_settings_from_env``): the library itself takes them as arguments and never reads them.

glibc's default malloc maps and unmaps large activation buffers every step (they exceed its mmap threshold),
which halves throughput and makes it swing between runs (DESIGN.md section 4). ``tune_allocator`` keeps freed
memory in the heap instead. The CLI and the benchmarks call it; set ``HWR_NO_MALLOPT=1`` to leave glibc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from hwr.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DataSettings",
    "configure",
    "data_settings_from_env",
    "device_name",
    "inductor_cache_dir",
    "inductor_cache_path",
    "resolve_device",
    "set_tf32",
    "synchronize",
    "tune_allocator",
]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_allocator() -> bool:
    """Stop glibc from returning activation buffers to the OS each step; True if applied."""
    if os.environ.get("HWR_NO_MALLOPT") == "1":
        return False
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
    """The inductor cache shared by tests, processes and study workers: ``TORCHINDUCTOR_CACHE_DIR``, else
    ``~/.cache/hwr/inductor``. Reads only; ``configure`` (``inductor_cache_dir``) exports it."""
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or Path.home() / ".cache" / "hwr" / "inductor")


def inductor_cache_dir() -> Path:
    """``inductor_cache_path()``, set in the environment so that this process's compiles and its child processes
    use it. Process start-up does this (``configure``: the CLI, the benchmarks; tests/conftest.py sets the
    variable itself); library code, ``hwr.engine.train.compile`` included, never writes the environment."""
    path = inductor_cache_path()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


class DataSettings(NamedTuple):
    """Where data lives and whether it may be downloaded: the ``root`` and ``network`` arguments of
    ``hwr.data.sources.load`` / ``fetch``."""

    root: Path
    network: bool


def data_settings_from_env(environ: Mapping[str, str] | None = None) -> DataSettings:
    """The CLI's data settings: ``$HWR_DATA`` (else ``~/.cache/hwr``) and ``HWR_OFFLINE=1`` (no internet
    downloads; MNIST still comes from the package registry). Only the CLI calls this; library functions take
    ``root=`` and ``network=`` and read no environment."""
    env = os.environ if environ is None else environ
    data = env.get("HWR_DATA")
    root = Path(data).expanduser() if data else Path.home() / ".cache" / "hwr"
    return DataSettings(root, env.get("HWR_OFFLINE") != "1")


def configure() -> None:
    """Apply the settings; call once at process start, before the first step runs. ``HWR_THREADS`` sets
    torch's intra-op threads (study workers on one machine split the cores this way)."""
    tune_allocator()
    inductor_cache_dir()
    quiet_cuda_home_warning()
    threads = os.environ.get("HWR_THREADS")
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
