"""The candidates the ``speedrun`` recipe was chosen from, scored on the validation split only (``test_split=False``:
no run here reads the test split), with their training seconds and samples/s, so the choice can be rerun and
questioned. Every candidate runs through ``hwr.tasks.digits.run`` with the default (autotuned, compiled) step.

    python benchmarks/speedrun_candidates.py [--names speedrun,bn_b512_e3] [--seeds 0 1 2] [--json PATH]
    python benchmarks/speedrun_candidates.py --precision bf16 --names speedrun,b256_e2,b512_e3   # bf16 CPUs

``--precision bf16`` runs every candidate's forward under bf16 autocast (``Execution.precision``): on a CPU with
bf16 instructions (``avx512_bf16`` / ``amx_bf16`` in /proc/cpuinfo) larger batches then run up to 1.8x faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import harness
from hwr import recipes
from hwr.engine.execution import PRECISIONS, Execution
from hwr.losses import LossConfig
from hwr.models.cnn import CNNConfig
from hwr.optim import OptimConfig
from hwr.tasks import digits
from hwr.tasks.digits.config import RunConfig

__all__ = ["CANDIDATES", "main"]


def _cnn(
    epochs: int, batch: int, lr: float, channels: tuple[int, ...] = (16, 32), smoothing: float = 0.0, **model: Any
) -> RunConfig:
    """A one-cycle Adam run of a CNN (``smoothing``: label smoothing): the shape every candidate shares."""
    return RunConfig(
        epochs=epochs,
        batch_size=batch,
        model_config=CNNConfig(channels=channels, **model),
        optim=OptimConfig("adam", lr, "onecycle", warmup=0.2),
        loss=LossConfig(label_smoothing=smoothing),
    )


CANDIDATES: dict[str, RunConfig] = {
    "seed_e1": _cnn(1, 128, 3e-3, channels=(32, 64)),
    "e2": _cnn(2, 128, 3e-3),
    "bn_e2": _cnn(2, 128, 5e-3, norm="batch"),
    "bn_e2_lr1e-2": _cnn(2, 128, 1e-2, norm="batch"),
    "bn_b256_e2": _cnn(2, 256, 6e-3, norm="batch"),
    "k5_24_32_b256_e2": _cnn(2, 256, 4e-3, channels=(24, 32), kernel_size=5, hidden=256),
    "bn_24_48_e1": _cnn(1, 128, 5e-3, channels=(24, 48), norm="batch"),
    "bn_b512_e3": _cnn(3, 512, 1e-2, norm="batch"),
    "b256_e2": _cnn(2, 256, 5e-3),
    "b512_e3": _cnn(3, 512, 6e-3),
    "b256_e3": _cnn(3, 256, 5e-3),
    "b256_e3_lr8e-3": _cnn(3, 256, 8e-3),
    "b256_e4": _cnn(4, 256, 5e-3),
    "speedrun": dataclasses.replace(recipes.get("speedrun"), recipe=""),  # 16-32, batch 256, 6e-3, smoothing, 2 epochs
    "b128_e3": _cnn(3, 128, 4e-3),  # the speedrun recipe until 2026-12-06 (16.4 s to 99.19% in fp32)
    # 2-epoch candidates at the batch sizes where bf16 autocast runs fastest on a CPU with bf16 instructions
    "b256_e2_lr8e-3": _cnn(2, 256, 8e-3),
    "b512_e2_lr8e-3": _cnn(2, 512, 8e-3),
    "b512_e2_lr1.2e-2": _cnn(2, 512, 1.2e-2),
    "b256_e2_ls": _cnn(2, 256, 6e-3, smoothing=0.1),
    "b256_e2_ls_lr8e-3": _cnn(2, 256, 8e-3, smoothing=0.1),
    "b256_e2_ls0.2": _cnn(2, 256, 6e-3, smoothing=0.2),
    "b512_e2_ls": _cnn(2, 512, 1.2e-2, smoothing=0.1),
    "b256_e2_ls_h256": _cnn(2, 256, 6e-3, smoothing=0.1, hidden=256),
    "b256_e2_ls_24_32": _cnn(2, 256, 6e-3, channels=(24, 32), smoothing=0.1),
    "b256_e2_ls_16_48": _cnn(2, 256, 6e-3, channels=(16, 48), smoothing=0.1),
}


def _row(
    name: str, seed: int, out: Path, limit_train: int | None, compile: bool, precision: str = "fp32"
) -> dict[str, Any]:
    """One candidate and seed, trained fresh; its validation accuracy and timing."""
    cfg = dataclasses.replace(CANDIDATES[name], seed=seed, limit_train=limit_train or 0)
    folder = out / f"{name}-{precision}-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    r = digits.run(
        cfg,
        folder,
        execution=Execution(compile=compile, precision=precision),
        test_split=False,
        write_figures=False,
        validate_every=cfg.epochs,
    )
    assert r["test"] is None  # the choice never sees the test split
    t = r["timing"]
    return {
        "name": name,
        "precision": precision,
        "seed": seed,
        "val_accuracy": r["val"]["accuracy"],
        "train_s": t["train_seconds"],
        "samples_per_s": t["samples_per_s"],
        "compile_s": t["compile_seconds"],
        "step": r["execution"].get("candidate"),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", default=",".join(CANDIDATES), help="comma-separated candidate names")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/speedrun_candidates")
    ap.add_argument("--limit-train", type=int, default=None, help="load only N training images (smoke runs)")
    ap.add_argument("--no-compile", action="store_true", help="run the step eagerly (smoke runs)")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS, help="bf16: the forward under autocast")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    names = args.names.split(",")
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        ap.error(f"unknown candidate(s) {unknown}; choose from {sorted(CANDIDATES)}")
    from hwr.cli import environment

    environment.start()
    rows = [
        _row(n, s, Path(args.out), args.limit_train, not args.no_compile, args.precision)
        for n in names
        for s in args.seeds
    ]
    harness.print_table(
        f"speedrun candidates on the validation split, {args.precision} (mean over seeds)",
        ("candidate", "seeds", "val accuracy", "min", "train s", "samples/s"),
        [
            (
                n,
                str(len(g := [r for r in rows if r["name"] == n])),
                f"{statistics.fmean(r['val_accuracy'] for r in g):.4f}",
                f"{min(r['val_accuracy'] for r in g):.4f}",
                f"{statistics.fmean(r['train_s'] for r in g):.1f}",
                f"{statistics.fmean(r['samples_per_s'] for r in g):,.0f}",
            )
            for n in names
        ],
    )
    if args.json:
        harness.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
