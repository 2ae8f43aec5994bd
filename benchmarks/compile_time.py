"""Compile time (cold and warm inductor cache) and steady throughput of the seed CNN train step.

    .venv/bin/python benchmarks/compile_time.py --batch-size 128
    .venv/bin/python benchmarks/compile_time.py --augment standard --option realize_reads_threshold=1

Two child processes share one fresh ``TORCHINDUCTOR_CACHE_DIR``: the first compiles cold (empty cache), the
second warm. Each times its first compiled call, then the eager and the compiled step over ``--steps`` steps
after a burn-in. Compile time is reported apart from steady state; no figure comes from a process that compiled
in its timed stage (the timed stage runs under ``fail_on_recompile``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import harness


def _options(pairs: list[str]) -> dict[str, int | float | bool | str]:
    """``["realize_reads_threshold=1", ...]`` -> inductor options (numbers and true/false parsed)."""
    out: dict[str, int | float | bool | str] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key:
            raise SystemExit(f"--option {pair!r}: write KEY=VALUE, e.g. --option realize_reads_threshold=1")
        low = text.lower()
        value: int | float | bool | str = {"true": True, "false": False}.get(low, text)
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        out[key] = value
    return out


def _worker(batch_size: int, steps: int, burn_in: int, threads: int, augment: str, options: dict) -> dict[str, float]:
    """Run in a child process: build, compile, time. Returns the figures as a dict."""
    import torch

    from hwr import models, optim, random
    from hwr.cli import environment
    from hwr.data import augment as aug
    from hwr.data import batches
    from hwr.engine import train
    from hwr.losses import LossConfig, make_loss

    environment.start()  # allocator + the cache dir the parent chose
    if threads:
        torch.set_num_threads(threads)
    model, opt = models.get("cnn"), optim.adam(1e-3)
    transform = aug.make_transform(aug.parse_augment(augment), 0.1307, 0.3081)
    step = train.train_step(model, opt, make_loss(LossConfig()), transform=transform)
    state = train.init_state(model, opt, random.key(0))
    g = torch.Generator().manual_seed(0)
    batch = batches.Batch(
        torch.randint(0, 256, (batch_size, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (batch_size,), generator=g),
        torch.ones(batch_size, dtype=torch.bool),
    )

    compiled = train.compile(step, **options)
    t0 = time.perf_counter()
    _, m = compiled(state, batch)
    float(m["loss"])
    compile_s = time.perf_counter() - t0

    def rate(fn) -> float:
        s = state
        for _ in range(burn_in):
            s, m = fn(s, batch)
        float(m["loss"])
        t = time.perf_counter()
        for _ in range(steps):
            s, m = fn(s, batch)
        float(m["loss"])
        return steps / (time.perf_counter() - t)

    with torch.compiler.set_stance("fail_on_recompile"):
        compiled_rate = rate(compiled)
    return {"compile_s": compile_s, "eager_steps_s": rate(step), "compiled_steps_s": compiled_rate}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=50, help="timed steps per mode")
    p.add_argument("--burn-in", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default, one per core)")
    p.add_argument("--augment", default="none", help="augmentation in the step (a preset or key=value,...)")
    p.add_argument("--option", action="append", default=[], help="inductor option KEY=VALUE (repeatable)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        figures = _worker(args.batch_size, args.steps, args.burn_in, args.threads, args.augment, _options(args.option))
        print(json.dumps(figures))
        return

    rows = {}
    with tempfile.TemporaryDirectory(prefix="hwr-inductor-") as cache:
        env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": cache}
        sizes = ["--batch-size", str(args.batch_size), "--steps", str(args.steps), "--burn-in", str(args.burn_in)]
        cmd = [sys.executable, __file__, "--worker", *sizes, "--threads", str(args.threads), "--augment", args.augment]
        cmd += [f"--option={o}" for o in args.option]
        for phase in ("cold", "warm"):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            rows[phase] = json.loads(out.strip().splitlines()[-1])

    load = os.getloadavg()[0]
    extra = f", augment {args.augment}" + "".join(f", {o}" for o in args.option)
    title = f"seed CNN train step, batch {args.batch_size}{extra}, {args.steps} timed steps, load average {load:.1f}"
    harness.print_table(
        title,
        ("cache", "compile (s)", "eager steps/s", "compiled steps/s", "eager samples/s", "compiled samples/s"),
        [
            (
                phase,
                f"{r['compile_s']:.1f}",
                f"{r['eager_steps_s']:.1f}",
                f"{r['compiled_steps_s']:.1f}",
                f"{r['eager_steps_s'] * args.batch_size:,.0f}",
                f"{r['compiled_steps_s'] * args.batch_size:,.0f}",
            )
            for phase, r in rows.items()
        ],
    )
    if args.json:
        meta = {"batch_size": args.batch_size, "steps": args.steps, "threads": args.threads, "load_average": load}
        meta |= {"augment": args.augment, "options": _options(args.option)}
        harness.write_json(args.json, meta | rows)


if __name__ == "__main__":
    main()
