"""A recipe's compiled train step, exactly as ``hwr train`` builds it (model, augmentation, loss, optimizer), in
each memory format: samples/s on real MNIST batches, variants interleaved, median of timed windows.

It measures what a lever does to a whole recipe rather than to the bare seed CNN (``benchmarks/step.py``): the
``best`` recipe's 1.16x for channels-last came from this comparison (the memory format is an execution choice,
``hwr.engine.execution.Execution``, which autotune now makes per machine).

    python benchmarks/recipe_step.py --recipe best [--formats contiguous,channels_last] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch

from benchmarks import harness
from hwr import random, recipes

MEMORY_FORMATS = ("contiguous", "channels_last")  # the fixed layouts timed (auto is a choice among them)
from hwr.data import batches as bt
from hwr.engine import (
    train,
)
from hwr.engine.execution import Execution
from hwr.tasks import digits as experiment

__all__ = ["main", "measure"]


def measure(recipe: str, formats: list[str], *, windows: int, steps: int, limit_train: int = 0) -> list[dict[str, Any]]:
    """Compile seconds and median samples/s of ``recipe``'s step in each memory format, on the same batches."""
    base = recipes.get(recipe, limit_train=limit_train)
    p = experiment.prepare(base)
    pool = bt.batches(random.key(7), *p.train, base.batch_size)[: steps + 1]
    if len(pool) < steps + 1:
        raise SystemExit(f"{len(pool)} batches of training data; need --steps + 1 = {steps + 1} (lower --steps)")
    runners = []
    for fmt in formats:
        step = train.compile(experiment.make_step(base, p, Execution(compile=False, memory_format=fmt)))
        state = train.init_state(p.model, p.optimizer, random.key(0), params=p.params, model_state=p.model_state)
        t0 = time.perf_counter()
        state, _ = step(state, pool[0])
        runners.append({"format": fmt, "step": step, "state": state, "compile_s": time.perf_counter() - t0, "w": []})
    for _, r in harness.rotations(runners, windows):  # rotate who goes first
        t0 = time.perf_counter()
        for b in pool[1:]:
            r["state"], m = r["step"](r["state"], b)
        float(m["loss"])
        r["w"].append(base.batch_size * steps / (time.perf_counter() - t0))
    ref = statistics.median(runners[0]["w"])
    return [
        {
            "recipe": recipe,
            "memory_format": r["format"],
            "batch_size": base.batch_size,
            "samples_per_s": statistics.median(r["w"]),
            "ratio": statistics.median(r["w"]) / ref,
            "compile_s": r["compile_s"],
            "threads": torch.get_num_threads(),
        }
        for r in runners
    ]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="best", choices=sorted(recipes.RECIPES))
    ap.add_argument("--formats", default=",".join(MEMORY_FORMATS), help="comma-separated memory formats")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=15, help="steps per timed window")
    ap.add_argument("--limit-train", type=int, default=0, help="load only N training images (smoke runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    formats = args.formats.split(",")
    unknown = sorted(set(formats) - set(MEMORY_FORMATS))
    if unknown:
        ap.error(f"unknown memory format(s) {unknown}; choose from {list(MEMORY_FORMATS)}")
    from hwr.cli import environment

    environment.start()
    rows = measure(args.recipe, formats, windows=args.windows, steps=args.steps, limit_train=args.limit_train)
    harness.print_table(
        f"recipe {args.recipe}: compiled train step, batch {rows[0]['batch_size']}, {rows[0]['threads']} thread(s)",
        ("memory format", "samples/s", f"vs {formats[0]}", "compile s"),
        [
            (r["memory_format"], f"{r['samples_per_s']:,.0f}", f"{r['ratio']:.2f}x", f"{r['compile_s']:.1f}")
            for r in rows
        ],
    )
    if args.json:
        harness.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
