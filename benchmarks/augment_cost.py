"""Cost of per-sample augmentation per batch: eager, inside a compiled function, and inside the compiled train step.

    .venv/bin/python benchmarks/augment_cost.py                      # standard preset + elastic, batch 128
    .venv/bin/python benchmarks/augment_cost.py --spec strong --no-step --out runs/bench/augment.json

Real MNIST images (fetched if missing). Each figure is the median over ``--iters`` timed calls after a burn-in,
every call with a new key, the contenders timed in alternation so a busy machine slows them alike; compile time
is reported apart, and the timed stage runs under ``fail_on_recompile`` so no figure includes a compile.
``HWR_THREADS=1`` pins one thread (on a shared, oversubscribed machine two OpenMP threads can stall each other
for tens of milliseconds per parallel region). With ``--step`` (default) the seed CNN train step is
compiled twice, with and without the augmentation in its transform, and the difference per step is the cost of
augmentation inside the compiled step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch

from benchmarks import harness

if TYPE_CHECKING:
    from hwr.data.augment import AugmentConfig
    from hwr.data.catalog import Dataset


def _parse_args() -> argparse.Namespace:
    """The command line: the augmentation, the batch and the timing budget."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="standard,elastic_alpha=34,elastic_sigma=4", help="augmentation spec")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--burn-in", type=int, default=5)
    p.add_argument("--no-step", dest="step", action="store_false", help="skip the train-step comparison")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    return p.parse_args()


def _time_function(
    args: argparse.Namespace, cfg: AugmentConfig, key: torch.Tensor, x_float: list[torch.Tensor]
) -> dict[str, float]:
    """Compile time of the fullgraph augmentation, then its median per call against eager."""
    from hwr import random
    from hwr.data import augment as aug

    fn = torch.compile(lambda k, x: aug.augment(k, x, cfg), fullgraph=True)
    t = time.perf_counter()
    fn(random.fold_in(key, 10_000), x_float[0])
    res = {"compile_s": time.perf_counter() - t}
    with torch.compiler.set_stance("fail_on_recompile"):
        ms = harness.median_ms(
            {
                "eager_ms": lambda i: aug.augment(random.fold_in(key, i), x_float[i % 8], cfg),
                "compiled_ms": lambda i: fn(random.fold_in(key, i), x_float[i % 8]),
            },
            args.iters,
            args.burn_in,
        )
    return res | ms


def _time_steps(args: argparse.Namespace, cfg: AugmentConfig, ds: Dataset, images: torch.Tensor) -> dict[str, float]:
    """The seed CNN train step compiled with and without the augmentation: compile times, medians and their difference."""
    from hwr import models, optim, random
    from hwr.data import augment as aug
    from hwr.engine import train
    from hwr.losses import LossConfig, make_loss

    b = args.batch_size
    model, opt = models.get("cnn"), optim.adam(1e-3)
    loss = make_loss(LossConfig())
    state = train.init_state(model, opt, random.key(1))
    from hwr.data import batches

    batch_list = [
        batches.Batch(
            images[i * b : (i + 1) * b], ds.train_labels[i * b : (i + 1) * b], torch.ones(b, dtype=torch.bool)
        )
        for i in range(8)
    ]
    res: dict[str, float] = {}
    steps = {}
    for label, config in (("step_plain", None), ("step_augmented", cfg)):
        step = train.compile(train.train_step(model, opt, loss, transform=aug.make_transform(config, 0.13, 0.31)))
        t = time.perf_counter()
        step(state, batch_list[0])
        res[f"{label}_compile_s"] = time.perf_counter() - t
        steps[f"{label}_ms"] = lambda i, step=step: step(state, batch_list[i % 8])[1]["loss"].item()
    with torch.compiler.set_stance("fail_on_recompile"):
        res |= harness.median_ms(steps, args.iters, args.burn_in)
    res["step_augment_ms"] = res["step_augmented_ms"] - res["step_plain_ms"]
    return res


def _report(args: argparse.Namespace, res: dict[str, object]) -> None:
    """Print the table and the JSON figures, and write them to ``--out`` if given."""
    b = args.batch_size
    rows = [("eager", res["eager_ms"], None), ("compiled function (fullgraph)", res["compiled_ms"], res["compile_s"])]
    if args.step:
        rows += [
            ("train step, no augmentation (compiled)", res["step_plain_ms"], res["step_plain_compile_s"]),
            ("train step, augmented (compiled)", res["step_augmented_ms"], res["step_augmented_compile_s"]),
            ("augmentation inside the compiled step", res["step_augment_ms"], None),
        ]
    harness.print_table(
        f"augmentation cost per batch of {b}: --augment {args.spec}",
        ("where", "ms / batch", "us / image", "compile s"),
        [(name, f"{ms:.2f}", f"{1000 * ms / b:.1f}", "" if comp is None else f"{comp:.1f}") for name, ms, comp in rows],
        left=("where",),
    )
    print(json.dumps(res, indent=2, default=str))
    if args.out:
        harness.write_json(args.out, res)


def main() -> None:
    args = _parse_args()

    from hwr import random
    from hwr.cli import environment
    from hwr.data import augment as aug
    from hwr.data import sources

    environment.start()
    cfg = aug.parse_augment(args.spec)
    b = args.batch_size
    ds = sources.load("mnist")
    images = ds.train_images[: b * 8]  # eight distinct batches, cycled
    x_float = [(images[i * b : (i + 1) * b].float() / 255.0) for i in range(8)]
    key = random.key(0)
    res: dict[str, object] = {
        "spec": args.spec,
        "config": cfg.__dict__,
        "batch_size": b,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    res |= _time_function(args, cfg, key, x_float)
    if args.step:
        res |= _time_steps(args, cfg, ds, images)
    _report(args, res)


if __name__ == "__main__":
    main()
