"""The timing harness the benchmarks share: fixed synthetic batches, contenders interleaved in rotating order,
wall and process-CPU seconds of a span of steps, the alternating call timer with its median, the transient memory
of one step (resident set on the CPU, ``max_memory_allocated`` on a GPU), inductor's cache counters, the matmul
peak, and the table and JSON every benchmark ends with.

Imports nothing heavy at import time (torch is imported inside the functions), so a benchmark can set
``TORCHINDUCTOR_CACHE_DIR`` and the like before torch first reads them. Benchmarks run as scripts
(``python benchmarks/step.py``) put the repository root on ``sys.path`` and import this as ``benchmarks.harness``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ROOT",
    "cpu_seconds",
    "gpu_step_memory_mib",
    "inductor_cache_counts",
    "median_ms",
    "peak_gflops",
    "print_table",
    "rotations",
    "step_memory_mib",
    "synthetic_pool",
    "time_steps",
    "write_json",
]

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def synthetic_pool(cfg: Any, batch_size: int, device: Any = None, n: int = 4) -> list[Any]:
    """``n`` fixed uint8 batches shaped for the model config ``cfg`` (``in_channels``, ``image_size``,
    ``num_classes``), all samples real (mask True), on ``device`` (None: where they are made, the CPU): set-up,
    so the timed steps copy nothing."""
    from hwr import random, tree
    from hwr.data.batches import synthetic_batches

    pool = synthetic_batches(
        random.key(1234), n, batch_size, channels=cfg.in_channels, size=cfg.image_size, num_classes=cfg.num_classes
    )
    return pool if device is None else [tree.map(lambda t: t.to(device), b) for b in pool]


def rotations(items: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """``(round, item)`` for every item in every round, the first item rotating each round (A B C, B C A, ...), so
    that load from other processes hits all contenders alike."""
    for r in range(rounds):
        for j in range(len(items)):
            yield r, items[(r + j) % len(items)]


def cpu_seconds() -> float:
    """Process CPU time, user + system, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_steps(step: Callable[[int], Any], n: int, start: int, block: Callable[[Any], None]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``step(start) ... step(start + n - 1)``, then ``block`` on the
    last output (waits for asynchronous work: a CUDA synchronise, JAX's ``block_until_ready``)."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = None
    for i in range(n):
        out = step(start + i)
    block(out)
    return time.perf_counter() - t0, cpu_seconds() - c0


def median_ms(fns: dict[str, Callable[[int], object]], iters: int, burn_in: int) -> dict[str, float]:
    """Median milliseconds per call of each function, timed in alternation (call i of every function, then
    call i + 1, ...) so that a busy machine slows them alike and their difference stays meaningful."""
    for i in range(burn_in):
        for fn in fns.values():
            fn(-1 - i)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(iters):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - t)
    return {name: 1000 * statistics.median(ts) for name, ts in times.items()}


# ------------------------------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL(name).malloc_trim(0)


def step_memory_mib(once: Callable[[], None]) -> float | None:
    """Peak rise of the resident set while ``once()`` (one step, waited for) runs, above the level after
    ``malloc_trim(0)``, sampled every 0.5 ms; None off Linux."""
    if not Path("/proc/self/statm").exists():
        return None
    _malloc_trim()
    base = _rss_bytes()
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    once()
    stop.set()
    t.join()
    return (max(peak[0], _rss_bytes()) - base) / 2**20


def gpu_step_memory_mib(once: Callable[[], None], device: Any) -> tuple[float, float]:
    """(peak rise of ``torch.cuda.max_memory_allocated`` while ``once()`` runs above the memory allocated before
    it, the absolute peak during it), MiB."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    once()
    peak = torch.cuda.max_memory_allocated(device)
    return (peak - base) / 2**20, peak / 2**20


# ------------------------------------------------------------------------------------------- compile, peak


def inductor_cache_counts() -> tuple[int, int]:
    """Inductor's FX-graph-cache (hits, misses) so far in this process."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]


def peak_gflops(seconds: float = 1.0, device: Any = "cpu", dtype: Any = None) -> float:
    """The matmul peak of ``device`` in ``dtype`` (float32 by default; on a GPU float32 means TF32 when
    ``runtime.set_tf32(True)``): the best of repeated square products, 2048 on a CPU (this process's threads),
    8192 on a GPU (each timed between synchronisations, 4 products per sample)."""
    import torch

    from hwr.engine import runtime

    device = torch.device(device)
    dtype = dtype or torch.float32
    n, reps = (8192, 4) if device.type == "cuda" else (2048, 1)
    a, b = torch.rand(n, n, device=device, dtype=dtype), torch.rand(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    runtime.synchronize(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        runtime.synchronize(device)
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


# --------------------------------------------------------------------------------------------- the output


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: Sequence[str] = (),
    caption: str | None = None,
    width: int | None = None,
) -> Any:
    """A rich table, columns right-justified but those named in ``left``; printed on ``hwr.report.console``, or
    on a console ``width`` wide. Returns the console, for lines that follow the table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    for cells in rows:
        table.add_row(*cells)
    if width is None:
        from hwr import report

        console = report.console
    else:
        console = Console(width=width)
    console.print(table)
    return console


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON at ``path`` (folders made, written atomically); values JSON lacks as strings."""
    from hwr import files

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())
