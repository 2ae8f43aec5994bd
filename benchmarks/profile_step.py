"""Where a training step's time goes: ``torch.profiler`` tables of step-benchmark variants side by side.

Builds each named variant of ``benchmarks/step.py`` (the same model, initial parameters and batches), warms it up
(compiles), then profiles ``--steps`` steps and prints the top operators by self CPU time, one table per variant,
so a gap between hwr's compiled step and a peer can be read operator by operator (a layout copy inside the graph,
the optimizer over many small leaves, a slow generated kernel). ``--trace DIR`` also writes Chrome traces.

    python benchmarks/profile_step.py                                    # hwr_compiled vs the channels-last module, b=32
    HWR_THREADS=1 python benchmarks/profile_step.py --variants eager_module_channels_last,hwr_compiled --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import harness, step

__all__ = ["main", "profile_variant"]


def profile_variant(runner: Any, steps: int, warmup: int, row_limit: int, trace: Path | None) -> str:
    """The profiler's operator table (sorted by self CPU time) of ``steps`` steps of ``runner`` after ``warmup``."""
    from torch.profiler import ProfilerActivity, profile

    for i in range(warmup):
        runner.block(runner.step(i))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for i in range(steps):
            out = runner.step(warmup + i)
        runner.block(out)
    if trace is not None:
        trace.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace / f"{runner.name}.json"))
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="eager_module_channels_last,hwr_compiled", help="step.py variant names")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="profiled steps per variant")
    ap.add_argument("--warmup", type=int, default=5, help="steps before profiling (the first compiles)")
    ap.add_argument("--rows", type=int, default=25, help="operators per table")
    ap.add_argument("--config", default="{}", help="CNNConfig fields as JSON (default: the seed CNN)")
    ap.add_argument("--trace", type=Path, help="also write a Chrome trace per variant into this folder")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    step.limit_threads()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))
    from hwr import random
    from hwr.cli import environment
    from hwr.models import cnn, config_from_dict

    environment.start()
    cfg = config_from_dict("cnn", json.loads(args.config))
    builders = step._variants(cfg)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in builders]
    if unknown:
        print(f"unknown variant(s) {unknown}; choose from {sorted(builders)}", file=sys.stderr)
        return 2
    params = cnn.model(cfg).init(random.key(0))
    pool = harness.synthetic_pool(cfg, args.batch_size)
    for name in names:
        runner = builders[name](params, pool)
        runner.name = name
        table = profile_variant(runner, args.steps, args.warmup, args.rows, args.trace)
        print(f"\n=== {name}, batch {args.batch_size}, {args.steps} steps ===\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
