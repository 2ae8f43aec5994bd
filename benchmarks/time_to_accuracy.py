"""Time to accuracy of a named recipe over seeds: wall time split into compile and training, and the final MNIST
test accuracy (mean and spread). Each seed is one `hwr train` run folder under --out, so every figure traces back
to its config.json and metrics.json.

    python benchmarks/time_to_accuracy.py --recipe fast --seeds 0 1 2 [--json runs/bench/fast.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from rich.table import Table

from hwr import experiment, files, recipes, report, runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="fast", choices=sorted(recipes.RECIPES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/bench", help="run folders go to OUT/RECIPE-seedS")
    ap.add_argument("--json", default=None)
    ap.add_argument("--fresh", action="store_true", help="retrain even where a finished run folder exists")
    args = ap.parse_args()
    runtime.configure()

    rows = []
    for seed in args.seeds:
        out = Path(args.out) / f"{args.recipe}-seed{seed}"
        if args.fresh and out.exists():
            shutil.rmtree(out)
        if (out / experiment.METRICS).is_file():
            r = json.loads((out / experiment.METRICS).read_text())
        else:
            resume = (out / experiment.CHECKPOINT).is_file()
            cfg = recipes.get(args.recipe, seed=seed)
            r = experiment.run(cfg, out, resume=resume, callbacks=[report.Progress(cfg.epochs)])
        t = r["timing"]
        rows.append({"recipe": args.recipe, "seed": seed, "epochs": len(r["epochs"]),
                     "compile_s": t["compile_seconds"], "train_s": t["train_seconds"],
                     "total_s": t["compile_seconds"] + t["train_seconds"], "test_accuracy": r["test"]["accuracy"],
                     "samples_per_s": t["samples_per_s"], "run": str(out)})
        report.console.print(f"seed {seed}: test accuracy {r['test']['accuracy']:.4f} in {rows[-1]['total_s']:.0f}s")

    acc = [r["test_accuracy"] for r in rows]
    table = Table(title=f"recipe {args.recipe}: time to accuracy over {len(rows)} seed(s)")
    for col in ("seed", "epochs", "compile s", "train s", "samples/s", "test accuracy"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["seed"]), str(r["epochs"]), f"{r['compile_s']:.1f}", f"{r['train_s']:.1f}",
                      f"{r['samples_per_s']:,.0f}", f"{r['test_accuracy']:.4f}")
    spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
    table.caption = (f"mean test accuracy {statistics.fmean(acc):.4f} ± {spread:.4f}; "
                     f"mean wall {statistics.fmean(r['total_s'] for r in rows):.0f}s")
    report.console.print(table)
    if args.json:
        files.write_json(args.json, rows)


if __name__ == "__main__":
    main()
