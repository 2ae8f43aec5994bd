"""Independent runs of a study in parallel processes: the pretrainings of its zoo and its evaluation's re-runs
and contenders.

Why processes, one intra-op thread each: a study's runs are small eager steps (batches of 32 on a few hundred
images) that one thread already keeps busy; measured on 2 cores (Zen 4), one 8-epoch fine-tune took 9.9 s with 2
threads, 6.6 s with 1, and two at once 6.5-7.0 s each, so two single-thread processes do 3x the work of one
process with both threads. Each run is a pure function of its config and seed, so the results do not depend on
how many processes ran them or in which order (the tests compare a pool's results with a serial map's).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from hwr.engine import runtime

__all__ = ["cores", "parallel_map"]


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _start(threads: int) -> None:
    runtime.configure(threads=threads)


def parallel_map(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    workers: int = 1,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[fn(*job) for job in jobs]``, on ``workers`` spawned processes (the cores split evenly between them) when
    ``workers > 1`` and there is more than one job, else in this process. ``fn`` and the jobs must pickle (a
    module-level function over configs and paths). ``on_done(index, result)`` is called in this process as each
    job finishes; the first job to raise stops the map and re-raises here, the results of those that finished
    stay where ``fn`` wrote them (a rerun resumes)."""
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for i, job in enumerate(jobs):
            out.append(fn(*job))
            if on_done:
                on_done(i, out[-1])
        return out
    n = min(workers, len(jobs))
    results: list[Any] = [None] * len(jobs)
    ctx = multiprocessing.get_context("spawn")  # fork after torch's threads start is unsafe
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_start, initargs=(max(1, cores() // n),)) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        try:
            for f in as_completed(futures):
                i = futures[f]
                results[i] = f.result()
                if on_done:
                    on_done(i, results[i])
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results
