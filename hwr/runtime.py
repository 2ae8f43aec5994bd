"""Process-level settings that decide CPU throughput: the allocator and the inductor cache.

glibc's default malloc maps and unmaps large activation buffers every step (they exceed its mmap threshold),
which halves throughput and makes it swing between runs (DESIGN.md section 4). ``tune_allocator`` keeps freed
memory in the heap instead. The CLI and the benchmarks call it; set ``HWR_NO_MALLOPT=1`` to leave glibc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

__all__ = ["configure", "inductor_cache_dir", "tune_allocator"]

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


def inductor_cache_dir() -> Path:
    """The inductor cache shared by tests, processes and study workers (``TORCHINDUCTOR_CACHE_DIR``, else
    ``~/.cache/hwr/inductor``); set in the environment so that child processes inherit it."""
    path = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(Path.home() / ".cache" / "hwr" / "inductor")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    return Path(path)


def configure() -> None:
    """Apply the settings; call once at process start, before the first step runs. ``HWR_THREADS`` sets
    torch's intra-op threads (study workers on one machine split the cores this way)."""
    tune_allocator()
    inductor_cache_dir()
    threads = os.environ.get("HWR_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
