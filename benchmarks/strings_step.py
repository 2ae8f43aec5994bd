"""Where a step of ``hwr train --recipe strings`` goes: rendering the batch, the compiled train step, the rest of
the fit loop, and the per-epoch validation, in one process with the parts' timed windows interleaved.

For each compile candidate named (``eager`` is the uncompiled step), after compiling it:

    render   ms per batch of ``hwr.tasks.strings.step.StringBatches`` (the recipe's fresh strings)
    step     ms per step on batches rendered beforehand (the step alone)
    loop     ms per step of ``hwr.engine.train.fit`` over one epoch of ``--steps`` fresh batches (what ``hwr
             train`` runs: render, step, the metric sums, the host read every ``sync_every`` steps)
    other    loop - render - step: what the loop adds around them
    prefetch ms per step of the same loop with each next batch rendered on a background thread while the step
             runs (``StringBatches(prefetch=True)``; ``hwr train`` renders in place)
    val      seconds of one validation pass (``config.val_strings`` strings, eager, once per epoch)

and projects the recipe's training time: ``epochs * (steps * min(loop, prefetch) + val)`` (compile not included). The
windows of every part and candidate rotate (A B A B) so load from other processes hits them alike; medians of
the windows. Absolute figures depend on the machine and its load; compare ratios from one run.

Measured (2026-12-06, the shared 2-core Zen 4 under load from other processes, ``HWR_THREADS=1``, so absolute
figures are slow; ratios from one process): a step of the recipe is 465-490 ms, of which rendering the 64 strings is
8.5-10.7 ms (about 2%), the fit loop's own work (metric sums, host reads) within noise of 0, and the compiled step
the rest; validation is 6 s an epoch (2.5% of one). The candidates: ``inductor`` and ``channels_last+inductor`` tie
(465 ms each), ``channels_last+aten`` 1.41x slower, eager 1.57x. Prefetch: 1.00x and 1.01x (the other core is not
free on this machine; its ceiling is the rendering's 2%). Inside the step (its parts compiled alone, one-off
scripts): the conv-BN-ReLU-maxpool stem forward and backward 400 ms (85%; oneDNN convolutions ~255 ms, inductor's
fused max-pool/batch-norm backward kernels ~165 ms), the BiGRU forward and backward 47 ms (10%), the CTC loss and
its gradient 1.2 ms; the step takes the time of the README's (c60ed3e) formulation of it (1.002x, interleaved).

    HWR_THREADS=1 python benchmarks/strings_step.py --steps 30 --windows 3
    HWR_THREADS=1 python benchmarks/strings_step.py --candidates inductor,channels_last+aten --json out.json
    python benchmarks/strings_step.py --candidates inductor,inductor@bf16   # bf16 autocast beside fp32
    python benchmarks/strings_step.py --smoke        # a tiny crnn, eager fp32 and bf16, two steps: its own check
"""

from __future__ import annotations

import argparse
import dataclasses
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
from hwr.data import strings as ds
from hwr.engine import autotune, perf, train
from hwr.engine import execution as ex
from hwr.models.crnn import CRNNConfig
from hwr.tasks.strings import training
from hwr.tasks.strings.config import StringsConfig
from hwr.tasks.strings.step import StringBatches, ctc_objective, evaluate

__all__ = ["SMOKE", "main", "measure"]

# --smoke: a crnn small enough that the whole script runs in seconds (strings of up to 3 digits, 16 px high)
SMOKE = StringsConfig(
    model_config=CRNNConfig(channels=(4, 8), hidden=8, proj=8, height=16),
    data=ds.StringSpec(height=16, width=48, max_length=3, ink_height=12.0, margin=(1.0, 2.0), gap=(-1.0, 2.0)),
    epochs=2,
    steps=3,
    batch_size=8,
    val_strings=12,
    test_strings=12,
)


def _step(name: str, p: training.Prepared, precision: str = "fp32") -> Any:
    """The train step of candidate ``name`` (``eager``: uncompiled) at ``precision`` (``bf16``: the model under
    autocast, float32 logits for the CTC), as ``hwr train`` builds it."""
    if name == "eager":
        return training.make_step(p, ex.Execution(compile=False, precision=precision))
    by_name = {c.name: c for c in autotune.CPU_CANDIDATES}
    if name not in by_name:
        raise SystemExit(f"unknown candidate {name!r}; choose eager or one of {sorted(by_name)}")
    objective = ctc_objective(p.model.config, mean=p.mean, std=p.std)
    model = perf.autocast(p.model, "bfloat16") if precision == "bf16" else p.model
    return autotune.build_step(by_name[name], model, p.optimizer, objective)


def _profile(runner: dict[str, Any], batches: list[Any], rows: int) -> None:
    """Print ``torch.profiler``'s operator table (self CPU time) of ``runner``'s step over ``batches``."""
    from torch.profiler import ProfilerActivity, profile

    state = runner["state"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches:
            state, m = runner["fn"](state, b)
        float(m["loss"])
    runner["state"] = state
    print(f"{runner['name']}: {len(batches)} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def _row(config: StringsConfig, r: dict[str, Any], val_s: float, steps: int, windows: int) -> dict[str, Any]:
    """A candidate's row from its timed windows (medians, ms per step) and the validation seconds."""
    ms = {k: statistics.median(v) for k, v in r["w"].items()}
    per_epoch = config.steps * min(ms["loop"], ms["prefetch_loop"]) / 1e3 + val_s
    return {
        "candidate": r["name"],
        "render_ms": ms["render"],
        "step_ms": ms["step"],
        "loop_ms": ms["loop"],
        "other_ms": ms["loop"] - ms["render"] - ms["step"],
        "prefetch_loop_ms": ms["prefetch_loop"],
        "prefetch_speedup": ms["loop"] / ms["prefetch_loop"],
        "strings_per_s": config.batch_size / ms["loop"] * 1e3,
        "prefetch_strings_per_s": config.batch_size / ms["prefetch_loop"] * 1e3,
        "val_s": val_s,
        "compile_s": r["compile_s"],
        "projected_min": config.epochs * per_epoch / 60.0,
        "threads": torch.get_num_threads(),
        "batch_size": config.batch_size,
        "steps": steps,
        "windows": windows,
    }


def measure(
    config: StringsConfig, candidates: list[str], *, steps: int, windows: int, profile: int = 0
) -> list[dict[str, Any]]:
    """One row per candidate (``NAME`` or ``NAME@bf16``: under bf16 autocast): median ms per step of render / step
    / loop / other, validation seconds, compile seconds and the projected training seconds of ``config``."""
    p = training.prepare(config)
    k_data = random.key(11)
    pool = p.pools["train"]
    epoch = lambda e, ahead=False: StringBatches(
        random.fold_in(k_data, e), pool, config.data, config.batch_size, steps, prefetch=ahead
    )
    fixed = list(epoch(10_000))  # the step's own batches, rendered beforehand
    runners = []
    for name in candidates:
        base, _, precision = name.partition("@")
        if precision not in ("", *ex.PRECISIONS):
            raise SystemExit(f"unknown precision {precision!r} in {name!r}; choose one of {ex.PRECISIONS}")
        fn = _step(base, p, precision or "fp32")
        state = train.init_state(p.model, p.optimizer, random.key(0), params=p.params, model_state=p.model_state)
        t0 = time.perf_counter()
        state, m = fn(state, fixed[0])
        float(m["loss"])
        runners.append({"name": name, "fn": fn, "state": state, "compile_s": time.perf_counter() - t0, "w": {}})
    parts = [(r, part) for r in runners for part in ("render", "step", "loop", "prefetch_loop")]
    counter = iter(range(1, 1_000_000))
    for _, (r, part) in harness.rotations(parts, windows):
        w = r["w"].setdefault(part, [])
        t0 = time.perf_counter()
        if part == "render":
            for _b in epoch(next(counter)):
                pass
        elif part == "step":
            for b in fixed:
                r["state"], m = r["fn"](r["state"], b)
            float(m["loss"])
        else:
            e, ahead = next(counter), part == "prefetch_loop"
            batches = lambda _e, e=e, ahead=ahead: epoch(e, ahead)
            r["state"], _ = train.fit(r["state"], r["fn"], batches, epochs=e + 1, start_epoch=e)
        w.append((time.perf_counter() - t0) / steps * 1e3)
    if profile:
        _profile(runners[0], fixed, profile)
    t0 = time.perf_counter()
    evaluate(p.model, runners[0]["state"].params, runners[0]["state"].model_state, p.val, mean=p.mean, std=p.std)
    val_s = time.perf_counter() - t0
    return [_row(config, r, val_s, steps, windows) for r in runners]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="strings", help="a strings recipe (default: strings)")
    ap.add_argument(
        "--candidates",
        default="inductor",
        help="comma-separated: eager and/or compile candidates, each NAME or NAME@bf16 (under bf16 autocast)",
    )
    ap.add_argument("--steps", type=int, default=30, help="steps per timed window (default 30)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows per part and candidate (default 3)")
    ap.add_argument(
        "--smoke", action="store_true", help="a tiny crnn, eager fp32 and bf16, 2 steps, 1 window (a quick check)"
    )
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS", help="print the first candidate's operators")
    args = ap.parse_args(argv)
    from hwr.cli import environment

    environment.start()
    if args.smoke:
        config, candidates, steps, windows = SMOKE, ["eager", "eager@bf16"], 2, 1
    else:
        config = recipes.get(args.recipe)
        if not isinstance(config, StringsConfig):
            raise SystemExit(f"{args.recipe} is not a strings recipe")
        candidates, steps, windows = args.candidates.split(","), args.steps, args.windows
    config = dataclasses.replace(config)
    rows = measure(config, candidates, steps=steps, windows=windows, profile=args.profile)
    cells = [
        [
            r["candidate"],
            *(f"{r[k]:.1f}" for k in ("render_ms", "step_ms", "other_ms", "loop_ms", "prefetch_loop_ms")),
            f"{r['prefetch_speedup']:.2f}x",
            f"{r['val_s']:.1f}",
            f"{r['compile_s']:.0f}",
            f"{r['projected_min']:.1f}",
        ]
        for r in rows
    ]
    harness.print_table(
        f"{args.recipe if not args.smoke else 'smoke'}: ms per step of {config.batch_size} strings, "
        f"{torch.get_num_threads()} thread(s), median of {windows} windows of {steps} steps "
        "(ahead: the loop with prefetch; gain: loop / ahead; comp: compile s; min: the recipe's projected "
        "training minutes, compile excluded)",
        ["cand", "render", "step", "other", "loop", "ahead", "gain", "val s", "comp", "min"],
        cells,
        left=["cand"],
    )
    for r in rows:
        share = {k: 100.0 * r[f"{k}_ms"] / r["loop_ms"] for k in ("render", "step", "other")}
        print(
            f"split {r['candidate']}: render {share['render']:.1f}%, step {share['step']:.1f}%, other "
            f"{share['other']:.1f}% of {r['loop_ms']:.1f} ms; prefetch {r['prefetch_speedup']:.2f}x; validation "
            f"{r['val_s']:.1f} s an epoch; projected {r['projected_min']:.1f} min for {config.epochs} epochs"
        )
    if args.json:
        harness.write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
