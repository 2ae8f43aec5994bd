"""K study trials of one structure: K separate steps against one vmapped step (``hwr.engine.stacked``), eager and
compiled, as trial-steps per second.

Each trial trains the seed CNN (``--config``) with AdamW on a cosine schedule, logit-adjusted cross-entropy and
per-sample rotation + translation, with its own key, initial parameters, batch order, learning rate, rotation and
tau, all reaching the step as tensors (``hwr.engine.train.hyper_step``), as a study's trials do
(``hwr.tasks.digits.lockstep`` trains digit configs this way). ``separate`` runs the K trials one step each per
round through one step shared by all of them (compiled once, as ``hwr.engine.execution.tuned_step`` shares it);
``vmapped`` runs one step over the K stacked trials (compiled once per K). Columns: trial-steps/s (K steps per
round over its seconds; samples/s is that times the batch), the vmapped form's speed-up over the separate one, and
compile seconds (the first call minus a steady one; the separate step compiles at the first K only). The two forms
alternate in timed windows (who goes first rotates) and each figure is the median window.

    python benchmarks/vmap_trials.py [--device cpu|cuda|auto] [--ks 1,4,8,16] [--modes eager,compiled]
        [--batch-size 32] [--windows 5] [--steps 5] [--config '{"channels": [4, 8], "hidden": 16}'] [--json PATH]

One thread (``HWR_THREADS=1``) gives the steadier CPU figures on a shared machine. ``benchmarks/gpu_check.sh`` runs
it on a GPU (stage ``vmap``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import harness

__all__ = ["main", "measure"]

MODES = ("eager", "compiled")


def _parts(augment: Any) -> Callable:
    """``hp -> (optimizer, objective)``: the trials' one structure, every value read from ``hp``."""
    from hwr import losses, optim
    from hwr.data import augment as aug
    from hwr.engine import train

    def parts(hp: dict) -> tuple[Any, Any]:
        optimizer = optim.from_config(optim.OptimConfig("adamw", 1e-3, "cosine"), 0, hp=hp["optim"])
        loss = losses.make_loss(losses.LossConfig("logit_adjust"), hp=hp["loss"])
        return optimizer, train.classifier(
            loss, transform=aug.make_transform(augment, hp["mean"], hp["std"], hp["aug"])
        )

    return parts


def _trial(model: Any, k: int, augment: Any, device: Any) -> tuple[Any, dict]:
    """Trial ``k``'s initial state (its own key and parameters) and values (its own lr, rotation, tau)."""
    import torch

    from hwr import losses, optim, random
    from hwr.data import augment as aug
    from hwr.engine import train

    opt = optim.OptimConfig("adamw", 1e-3 * (1 + k % 5), "cosine")
    rot = dataclasses.replace(augment, rotation=5.0 + 2 * (k % 6))
    scalar = lambda x: torch.tensor(x, dtype=torch.float64, device=device)
    counts = torch.arange(1, model.config.num_classes + 1)
    hp = {
        "optim": optim.hyperparameters(opt, 1000, device),
        "loss": losses.hyperparameters(losses.LossConfig("logit_adjust", tau=0.5 + 0.25 * (k % 4)), counts, device),
        "aug": aug.hyperparameters(rot, (model.config.image_size,) * 2, device),
        "mean": scalar(0.13),
        "std": scalar(0.31),
    }
    state = train.init_state(model, optim.from_config(opt, 1000), random.key(k, device=device))
    return state, hp


def _runners(model: Any, k: int, pool: list, compiled: dict[str, Any], mode: str) -> dict[str, Callable]:
    """``{"separate": round, "vmapped": round}``: one call advances each of the K trials one step."""
    from hwr import tree
    from hwr.data import augment as aug
    from hwr.engine import autotune, stacked, train

    augment = aug.AugmentConfig(rotation=10.0, translate=2.0)
    device = pool[0].images.device
    trials = [_trial(model, i, augment, device) for i in range(k)]
    core = train.hyper_step(model, _parts(augment))
    options = autotune.inductor(device).options  # as hwr builds it (execution.stacked_step): CPU_BUILD on the CPU
    if mode == "compiled" and "separate" not in compiled:
        compiled["separate"] = train.compile(core, **options)  # shared by every K, as a study's trials share it
    separate = compiled["separate"] if mode == "compiled" else core
    vmapped = stacked.vmapped(core)
    vmapped = train.compile(vmapped, **options) if mode == "compiled" else vmapped
    states, hps, n = [s for s, _ in trials], [h for _, h in trials], len(pool)
    batches = [tree.stack([pool[(i + j) % n] for i in range(k)]) for j in range(n)]  # trial i: its own order
    held, _, stacked_hps = stacked.stack_trials(states, [pool[i % n] for i in range(k)], hps)
    holder = [held]

    def one_by_one(j: int) -> Any:
        for i in range(k):
            states[i], m = separate(states[i], pool[(i + j) % n], hps[i])
        return m

    def together(j: int) -> Any:
        holder[0], m = vmapped(holder[0], batches[j % n], stacked_hps)
        return m

    return {"separate": one_by_one, "vmapped": together}


def _time(runners: dict[str, Callable], windows: int, steps: int, device: Any) -> dict[str, dict[str, float]]:
    """Compile seconds (first call minus a steady one) and median rounds/s of each runner, windows alternating."""
    from hwr.engine import runtime

    block = lambda _out: runtime.synchronize(device)
    first = {}
    for name, fn in runners.items():
        first[name] = harness.time_steps(fn, 1, 0, block)[0]
        steady = harness.time_steps(fn, 1, 1, block)[0]
        first[name] = max(first[name] - steady, 0.0)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for w, name in harness.rotations(list(runners), windows):
        wall, _cpu = harness.time_steps(runners[name], steps, 2 + w * steps, block)
        rates[name].append(steps / wall)
    return {name: {"rounds_per_s": statistics.median(r), "compile_s": first[name]} for name, r in rates.items()}


def measure(
    ks: list[int],
    modes: list[str],
    *,
    batch_size: int,
    windows: int,
    steps: int,
    device: str,
    config: dict,
    on_row: Callable[[list[dict[str, Any]]], Any] = lambda rows: None,
) -> list[dict[str, Any]]:
    """One row per (mode, K): trial-steps/s and samples/s of K separate steps and of one vmapped step;
    ``on_row(rows)`` after each (the JSON is rewritten, so a stage cut short keeps what finished)."""
    import torch

    from hwr import models
    from hwr.engine import runtime

    dev = runtime.resolve_device(device)
    model = models.get("cnn", models.config_from_dict("cnn", config))
    pool = harness.synthetic_pool(model.config, batch_size, dev)
    rows = []
    for mode in modes:
        compiled: dict[str, Any] = {}
        for k in ks:
            timed = _time(_runners(model, k, pool, compiled, mode), windows, steps, dev)
            sep, vm = (timed[n]["rounds_per_s"] * k for n in ("separate", "vmapped"))
            rows.append(
                {
                    "mode": mode,
                    "trials": k,
                    "batch_size": batch_size,
                    "separate_trial_steps_per_s": sep,
                    "vmapped_trial_steps_per_s": vm,
                    "separate_samples_per_s": sep * batch_size,
                    "vmapped_samples_per_s": vm * batch_size,
                    "speedup": vm / sep,
                    "separate_compile_s": timed["separate"]["compile_s"],
                    "vmapped_compile_s": timed["vmapped"]["compile_s"],
                    "device": runtime.device_name(dev),
                    "threads": torch.get_num_threads(),
                }
            )
            on_row(rows)
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    r0 = rows[0]
    harness.print_table(
        f"K trials of one structure, batch {r0['batch_size']}, {r0['device']}, {r0['threads']} thread(s)",
        ("mode", "K", "separate steps/s", "vmapped steps/s", "vmapped samples/s", "speed-up", "compile s sep / vmap"),
        [
            (
                r["mode"],
                str(r["trials"]),
                f"{r['separate_trial_steps_per_s']:,.1f}",
                f"{r['vmapped_trial_steps_per_s']:,.1f}",
                f"{r['vmapped_samples_per_s']:,.0f}",
                f"{r['speedup']:.2f}x",
                f"{r['separate_compile_s']:.1f} / {r['vmapped_compile_s']:.1f}",
            )
            for r in rows
        ],
        left=("mode",),
        caption="steps/s: trial-steps per second (K per round); speed-up: vmapped over separate",
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    ap.add_argument("--ks", default="1,4,8,16", help="comma-separated numbers of trials")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: eager, compiled")
    ap.add_argument("--batch-size", type=int, default=32, help="per trial (a study trial's batch is 16-32)")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="rounds per timed window")
    ap.add_argument("--config", default="{}", help="the CNN's config as JSON (default: the seed CNN)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    if sorted(set(modes) - set(MODES)):
        ap.error(f"unknown mode(s) {sorted(set(modes) - set(MODES))}; choose from {list(MODES)}")
    ks = [int(k) for k in args.ks.split(",")]
    if min(ks) < 1:
        ap.error(f"--ks must be >= 1, got {ks}")
    if "compiled" in modes and len(ks) > 7:  # each K is a graph of its own for one code object
        ap.error(f"at most 7 values of K compile in one process (dynamo's 8 versions of a function); got {len(ks)}")
    from hwr.cli import environment

    environment.start()
    rows = measure(
        ks,
        modes,
        batch_size=args.batch_size,
        windows=args.windows,
        steps=args.steps,
        device=args.device,
        config=json.loads(args.config),
        on_row=lambda rows: args.json and harness.write_json(args.json, rows),
    )
    _print(rows)
    return rows


if __name__ == "__main__":
    main()
