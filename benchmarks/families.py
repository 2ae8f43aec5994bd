"""Model families side by side: parameters, compiled training throughput, and MNIST test accuracy after the same
training-time budget.

Every family (``--families``, default cnn, rnn and vit with their default configs) trains with the same pure step
(``hwr.train.train_step`` + ``hwr.train.compile``, Adam, cross-entropy) on uint8 batches of ``--batch-size``.

- samples/s: compiled step, synthetic batches; the median of ``--windows`` windows of about ``--window-s`` seconds
  after warm-up. Families run interleaved (A B C A B C) so that load from other processes hits all alike; ``vs cnn``
  is the ratio to the CNN measured in the same rounds. ``compile s`` is the first call minus one steady step.
- ``--train-seconds S``: each family then trains on MNIST for S seconds of stepping (compile excluded): Adam with a
  one-cycle schedule (peak ``--lr``) over the steps the measured throughput predicts for S seconds, gradients
  clipped at global norm 1, normalised pixels, no augmentation; stopped at S seconds or at the schedule's end,
  whichever comes first; then the full MNIST test set is evaluated.

On a machine shared with other jobs, run with ``HWR_THREADS=1``: two intra-op threads on two busy cores wait on
each other at every kernel's barrier and throughput collapses (measured: the CNN at 130 samples/s with two threads
against 530-750 with one, under a load average of 4); one thread degrades only in proportion to its CPU share.

    python benchmarks/families.py                          # params, samples/s at batch 128 (about 5 min cold)
    python benchmarks/families.py --train-seconds 300      # + 5 minutes of MNIST training per family
    python benchmarks/families.py --families rnn,vit --windows 3 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hwr import losses, models, optim, random, runtime, train, tree  # noqa: E402
from hwr.train import Batch  # noqa: E402

__all__ = ["main", "measure", "train_budget"]


def _pool(cfg: Any, batch_size: int, n: int = 4) -> list[Any]:
    """``n`` fixed uint8 batches shaped for ``cfg``, all samples real (mask True)."""
    from hwr import random
    from hwr.data.batches import synthetic_batches

    return synthetic_batches(random.key(1234), n, batch_size, channels=cfg.in_channels, size=cfg.image_size,
                             num_classes=cfg.num_classes)


class _Runner:
    """One family's compiled step on synthetic batches; ``window(seconds)`` times steps and returns samples/s."""

    def __init__(self, name: str, batch_size: int) -> None:
        self.name, self.batch_size = name, batch_size
        self.model = models.get(name)
        opt = optim.adam(1e-3)
        self.state = train.init_state(self.model, opt, random.key(0))
        self.params = tree.num_params(self.state.params)
        self.pool = _pool(self.model.config, batch_size)
        self.step = train.compile(train.train_step(self.model, opt, losses.cross_entropy))
        self.i = 0
        t0 = time.perf_counter()
        self._run(1)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._run(2)  # warm-up
        self.compile_s = first - (time.perf_counter() - t0) / 2
        self.windows: list[float] = []

    def _run(self, n: int) -> None:
        for _ in range(n):
            self.state, m = self.step(self.state, self.pool[self.i % len(self.pool)])
            self.i += 1
        float(m["loss"])  # wait for the result

    def window(self, seconds: float) -> None:
        steps, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds or steps == 0:
            self._run(1)
            steps += 1
        self.windows.append(steps * self.batch_size / elapsed)


def measure(names: list[str], batch_size: int, windows: int, window_s: float) -> list[dict[str, Any]]:
    """Parameters, compile seconds and compiled samples/s (median of interleaved windows) per family."""
    runners = [_Runner(n, batch_size) for n in names]
    with torch.compiler.set_stance("fail_on_recompile"):
        for r in range(windows):
            for j in range(len(runners)):
                runners[(r + j) % len(runners)].window(window_s)  # rotate who goes first
    return [
        {
            "family": r.name,
            "config": dataclasses.asdict(r.model.config),
            "params": r.params,
            "compile_s": round(r.compile_s, 2),
            "samples_per_s": round(statistics.median(r.windows), 1),
            "windows": [round(w, 1) for w in r.windows],
        }
        for r in runners
    ]


def _epochs(key: random.Key, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """Shuffled fixed-shape batches, epoch after epoch (epoch ``e`` keyed by ``fold_in(key, e)``)."""
    from hwr.data import batches

    for epoch in itertools.count():
        yield from batches.batches(random.fold_in(key, epoch), images, labels, batch_size)


def train_budget(
    name: str,
    seconds: float,
    samples_per_s: float,
    *,
    batch_size: int,
    lr: float,
    seed: int = 0,
    config: Any = None,
) -> dict[str, Any]:
    """Train family ``name`` (``config``: its config or a dict of fields; None for the defaults) on MNIST for
    ``seconds`` of stepping; return steps, epochs and test accuracy."""
    from hwr.data import augment, batches, clean, sources

    data = sources.load("mnist")
    mean, std = clean.normalization_stats(data.train_images)
    transform = augment.make_transform(None, mean, std)
    model = models.get(name, config)
    steps = max(int(seconds * samples_per_s / batch_size), 1)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(optim.onecycle(peak=lr, steps=steps)))
    k_state, k_data = random.split(random.key(seed))
    state = train.init_state(model, opt, k_state)
    step = train.compile(train.train_step(model, opt, losses.cross_entropy, transform=transform))
    stream = _epochs(k_data, data.train_images, data.train_labels, batch_size)
    t0 = time.perf_counter()
    state, _ = step(state, next(stream))  # compile; this step counts as step 1 of the schedule
    compile_s = time.perf_counter() - t0
    done, t0 = 1, time.perf_counter()
    with torch.compiler.set_stance("fail_on_recompile"):
        for batch in stream:
            if done >= steps or time.perf_counter() - t0 >= seconds:
                break
            state, m = step(state, batch)
            float(m["loss"])  # wait for the step, so the clock sees it
            done += 1
    elapsed = time.perf_counter() - t0
    evaluate = train.eval_step(model, len(data.classes), transform=transform)
    sums = {"correct": 0, "count": 0}
    with torch.no_grad():
        for batch in batches.batches(None, data.test_images, data.test_labels, 1000, shuffle=False, drop_last=False):
            m = evaluate(state.params, state.model_state, batch)
            sums = {k: sums[k] + int(m[k]) for k in sums}
    return {
        "train_s": round(elapsed, 1),
        "train_compile_s": round(compile_s, 2),
        "steps": done,
        "planned_steps": steps,
        "epochs": round(done * batch_size / data.train_images.shape[0], 2),
        "test_accuracy": sums["correct"] / sums["count"],
    }


def _table(rows: list[dict[str, Any]], trained: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    cnn = next((r["samples_per_s"] for r in rows if r["family"] == "cnn"), None)
    table = Table(title="model families (compiled pure step)")
    cols = ["family", "params", "samples/s", "vs cnn", "compile s"]
    cols += ["train s", "steps", "epochs", "test acc"] if trained else []
    for c in cols:
        table.add_column(c, justify="left" if c == "family" else "right")
    for r in rows:
        ratio = f"{r['samples_per_s'] / cnn:.2f}" if cnn else "-"
        cells = [r["family"], f"{r['params']:,}", f"{r['samples_per_s']:,.0f}", ratio, f"{r['compile_s']:.1f}"]
        if trained:
            cells += [f"{r['train_s']:.0f}", str(r["steps"]), f"{r['epochs']:.2f}", f"{100 * r['test_accuracy']:.2f}%"]
        table.add_row(*cells)
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--families", default="cnn,rnn,vit", help="comma-separated registered families")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--windows", type=int, default=5, help="timed windows per family (median reported)")
    p.add_argument("--window-s", type=float, default=1.0, help="seconds per timed window")
    p.add_argument("--train-seconds", type=float, default=0.0, help="also train each family on MNIST this long")
    p.add_argument("--lr", type=float, default=3e-3, help="one-cycle peak learning rate for --train-seconds")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = sorted(set(names) - set(models.names()))
    if unknown:
        p.error(f"unknown families {unknown}; choose from {models.names()}")
    runtime.configure()
    load_before = os.getloadavg()
    rows = measure(names, args.batch_size, args.windows, args.window_s)
    if args.train_seconds > 0:
        for row in rows:
            torch._dynamo.reset()  # a fresh cache per family keeps clear of dynamo's recompile limit
            row.update(
                train_budget(row["family"], args.train_seconds, row["samples_per_s"], batch_size=args.batch_size,
                             lr=args.lr)
            )
    _table(rows, args.train_seconds > 0)
    if args.json:
        meta = {
            "command": " ".join(["python", "benchmarks/families.py", *(argv if argv is not None else sys.argv[1:])]),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "batch_size": args.batch_size,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, default=str) + "\n")
    return rows


if __name__ == "__main__":
    main()
