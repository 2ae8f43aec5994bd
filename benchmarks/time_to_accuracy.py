"""Time to accuracy of a named recipe over seeds: wall time split into compile and training, and the final MNIST
test accuracy (mean and spread). Each seed is one `hwr train` run folder under --out, so every figure traces back
to its config.json and metrics.json.

``--device cuda`` (``auto``: CUDA when available) loads the data onto the GPU once and keeps it resident there:
batches are gathered on the device, the fit loop reads metrics back every ``sync_every`` steps only, and the
epoch's time is taken after a device synchronisation. ``--limit-train``/``--limit-test``/``--epochs`` shrink a run
for a smoke test; the JSON then says so. The step is the autotuned compiled one (``hwr.engine.execution``; its choice is
in each row), unless ``--no-compile`` or ``--memory-format`` say otherwise.

    python benchmarks/time_to_accuracy.py --recipe fast --seeds 0 1 2 [--json runs/bench/fast.json]
    python benchmarks/time_to_accuracy.py --recipe fast --seeds 0 --device cuda --json gpu_fast.json
    python benchmarks/time_to_accuracy.py --recipe fast --seeds 0 1 2 --precision fp32 bf16   # bf16's accuracy cost
    python benchmarks/time_to_accuracy.py --recipe speedrun fast --seeds 0 1 2 3 4   # side by side, one process

Several recipes or precisions run one after another in one process (all seeds of the first, then the next), and a
last table sets them side by side: mean and minimum test accuracy, mean training seconds, mean samples/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import harness
from hwr import recipes, report, runs
from hwr.engine import runtime
from hwr.engine.execution import MEMORY_FORMATS, PRECISIONS, Execution
from hwr.tasks import digits as experiment

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    """The command line: the recipe and seeds, where the runs go, and the smoke-run limits."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", nargs="+", default=["fast"], choices=sorted(recipes.RECIPES), help="one or more")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/bench", help="run folders go to OUT/RECIPE[-DEVICE]-seedS")
    ap.add_argument("--json", default=None)
    ap.add_argument("--fresh", action="store_true", help="retrain even where a finished run folder exists")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    ap.add_argument("--no-compile", action="store_true", help="run the step eagerly")
    ap.add_argument("--memory-format", default="auto", choices=MEMORY_FORMATS, help="auto: autotune picks")
    ap.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=PRECISIONS,
        help="one or more; bf16: the forward under bf16 autocast (its accuracy cost)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (smoke runs)")
    ap.add_argument("--limit-train", type=int, default=None, help="load only N training images (smoke runs)")
    ap.add_argument("--limit-test", type=int, default=None, help="evaluate on only N test images (smoke runs)")
    return ap


def _seed_row(
    args: argparse.Namespace,
    recipe: str,
    precision: str,
    device: Any,
    seed: int,
    overrides: dict[str, Any],
    smoke: bool,
) -> dict[str, Any]:
    """One seed's row: its run folder's metrics, training it first unless it has finished already."""
    suffix = ("" if device.type == "cpu" else f"-{device.type}") + ("" if precision == "fp32" else f"-{precision}")
    out = Path(args.out) / f"{recipe}{suffix}-seed{seed}"
    if args.fresh and out.exists():
        shutil.rmtree(out)
    if (out / runs.METRICS).is_file():
        r = json.loads((out / runs.METRICS).read_text())
    else:
        resume = (out / runs.CHECKPOINT).is_file()
        cfg = recipes.get(recipe, seed=seed, **overrides)
        execution = Execution(
            device=str(device), compile=not args.no_compile, memory_format=args.memory_format, precision=precision
        )
        r = experiment.run(cfg, out, execution=execution, resume=resume, callbacks=[report.Progress(cfg.epochs)])
    t, used = r["timing"], r.get("execution", {})
    return {
        "recipe": recipe,
        "seed": seed,
        "epochs": len(r["epochs"]),
        "device": str(device),
        "device_name": runtime.device_name(device),
        "precision": used.get("precision", precision),
        "smoke": smoke,
        "compile_s": t["compile_seconds"],
        "train_s": t["train_seconds"],
        "total_s": t["compile_seconds"] + t["train_seconds"],
        "test_accuracy": r["test"]["accuracy"],
        "samples_per_s": t["samples_per_s"],
        "step": used.get("candidate", "eager"),
        "memory_format": used.get("memory_format"),
        "run": str(out),
    }


def _print_summary(device: Any, rows: list[dict[str, Any]], smoke: bool) -> None:
    """One recipe's seeds side by side, with the mean test accuracy, its spread and the mean wall time."""
    acc = [r["test_accuracy"] for r in rows]
    spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
    harness.print_table(
        f"recipe {rows[0]['recipe']} on {device} ({rows[0]['device_name']}, {rows[0]['precision']}): time to accuracy over "
        f"{len(rows)} seed(s)"
        f"{' (smoke run)' if smoke else ''}",
        ("seed", "epochs", "compile s", "train s", "samples/s", "test accuracy"),
        [
            (
                str(r["seed"]),
                str(r["epochs"]),
                f"{r['compile_s']:.1f}",
                f"{r['train_s']:.2f}",
                f"{r['samples_per_s']:,.0f}",
                f"{r['test_accuracy']:.4f}",
            )
            for r in rows
        ],
        caption=f"mean test accuracy {statistics.fmean(acc):.4f} ± {spread:.4f}; "
        f"mean wall {statistics.fmean(r['total_s'] for r in rows):.1f}s",
    )


def _print_comparison(groups: list[list[dict[str, Any]]]) -> None:
    """Recipes (or precisions) measured in this run, one line each: where a time-to-accuracy claim is read."""
    harness.print_table(
        "side by side (one process, one after another)",
        ("recipe", "precision", "seeds", "mean accuracy", "min accuracy", "mean train s", "mean samples/s"),
        [
            (
                g[0]["recipe"],
                g[0]["precision"],
                str(len(g)),
                f"{statistics.fmean(r['test_accuracy'] for r in g):.4f}",
                f"{min(r['test_accuracy'] for r in g):.4f}",
                f"{statistics.fmean(r['train_s'] for r in g):.2f}",
                f"{statistics.fmean(r['samples_per_s'] for r in g):,.0f}",
            )
            for g in groups
        ],
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = _parser()
    args = ap.parse_args(argv)
    from hwr.cli import environment

    environment.start()
    try:
        device = runtime.resolve_device(args.device)
    except ValueError as e:
        ap.error(str(e))
    overrides = {"epochs": args.epochs, "limit_train": args.limit_train, "limit_test": args.limit_test}
    smoke = any(v is not None for v in overrides.values())

    groups = []
    for recipe in args.recipe:
        for precision in args.precision:
            group = []
            for seed in args.seeds:
                group.append(_seed_row(args, recipe, precision, device, seed, overrides, smoke))
                report.console.print(
                    f"{recipe} {precision} seed {seed}: test accuracy {group[-1]['test_accuracy']:.4f} "
                    f"in {group[-1]['total_s']:.0f}s"
                )
            _print_summary(device, group, smoke)
            groups.append(group)
    if len(groups) > 1:
        _print_comparison(groups)
    rows = [r for g in groups for r in g]
    if args.json:
        harness.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
