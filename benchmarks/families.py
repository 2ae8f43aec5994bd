"""Model families side by side: parameters, compiled training throughput, and MNIST test accuracy after the same
training-time budget.

Every family (``--families``, default cnn, rnn and vit with their default configs) trains with the same pure step
(``hwr.engine.train.train_step`` + ``hwr.engine.train.compile``, Adam, cross-entropy) on uint8 batches of ``--batch-size``.

- samples/s: compiled step, synthetic batches; the median of ``--windows`` windows of about ``--window-s`` seconds
  after warm-up. Families run interleaved (A B C A B C) so that load from other processes hits all alike; ``vs cnn``
  is the ratio to the CNN measured in the same rounds. ``compile s`` is the first call minus one steady step.
- ``jax_jit`` rows (unless ``--no-jax``): each family's JAX twin (``hwr.interop.jax.train_step``: the same step,
  optax Adam, ``jax.jit`` with donated state) from the same initial parameters on the same batches, interleaved
  with the hwr rows. ``per CPU-s``: samples per second of process CPU time (user + system, all threads), the fair
  figure when JAX runs in XLA's own thread pool (``HWR_THREADS`` does not limit it) and steadier on a shared
  machine; ``JAX/hwr`` is the ratio of the two per CPU-second. ``parity``: the largest absolute difference between
  the JAX and hwr logits (eval mode, first batch, initial parameters, matmul precision "highest").
- ``--train-seconds S``: each family then trains on MNIST for S seconds of stepping (compile excluded): Adam with a
  one-cycle schedule (peak ``--lr``) over the steps the measured throughput predicts for S seconds, gradients
  clipped at global norm 1, normalised pixels, no augmentation; stopped at S seconds or at the schedule's end,
  whichever comes first; then the full MNIST test set is evaluated.

On a machine shared with other jobs, run with ``HWR_THREADS=1``: two intra-op threads on two busy cores wait on
each other at every kernel's barrier and throughput collapses (measured: the CNN at 130 samples/s with two threads
against 530-750 with one, under a load average of 4); one thread degrades only in proportion to its CPU share.

    python benchmarks/families.py                          # params, samples/s at batch 128 (about 5 min cold)
    HWR_THREADS=1 python benchmarks/families.py --quick    # 3 short windows per row, hwr and JAX (~2 min warm)
    python benchmarks/families.py --train-seconds 300      # + 5 minutes of MNIST training per family
    python benchmarks/families.py --families rnn,vit --windows 3 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
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

import torch

from benchmarks import harness
from hwr import losses, models, optim, random, tree
from hwr.data.batches import Batch
from hwr.engine import train

__all__ = ["main", "measure", "train_budget"]


class _Runner:
    """One family's compiled hwr step on synthetic batches; ``window(seconds)`` times steps (wall and CPU)."""

    variant = "hwr_compiled"

    def __init__(self, name: str, batch_size: int) -> None:
        self.name, self.batch_size = name, batch_size
        self.model = models.get(name)
        opt = optim.adam(1e-3)
        self.start = train.init_state(self.model, opt, random.key(0))  # the JAX row starts here too
        self.state = self.start
        self.params = tree.num_params(self.state.params)
        self.pool = harness.synthetic_pool(self.model.config, batch_size)
        self.step = train.compile(train.train_step(self.model, opt, losses.cross_entropy))
        self.i = 0
        self.windows: list[float] = []
        self.cpu_windows: list[float] = []
        self.compile_s = self._warm_up()

    def _warm_up(self) -> float:
        t0 = time.perf_counter()
        self._run(1)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._run(2)
        return first - (time.perf_counter() - t0) / 2

    def _step(self, batch: Batch) -> Any:
        self.state, m = self.step(self.state, batch)
        return m["loss"]

    def _run(self, n: int) -> None:
        for _ in range(n):
            loss = self._step(self.pool[self.i % len(self.pool)])
            self.i += 1
        float(loss)  # wait for the result

    def window(self, seconds: float) -> None:
        steps, t0, c0 = 0, time.perf_counter(), harness.cpu_seconds()
        while (elapsed := time.perf_counter() - t0) < seconds or steps == 0:
            self._run(1)
            steps += 1
        self.windows.append(steps * self.batch_size / elapsed)
        self.cpu_windows.append(steps * self.batch_size / max(harness.cpu_seconds() - c0, 1e-9))

    def row(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "variant": self.variant,
            "config": dataclasses.asdict(self.model.config),
            "params": self.params,
            "compile_s": round(self.compile_s, 2),
            "samples_per_s": round(statistics.median(self.windows), 1),
            "samples_per_cpu_s": round(statistics.median(self.cpu_windows), 1),
            "windows": [round(w, 1) for w in self.windows],
            "cpu_windows": [round(w, 1) for w in self.cpu_windows],
        }


class _JaxRunner(_Runner):
    """The family's JAX twin (``hwr.interop.jax.train_step`` + optax Adam under ``jit``, donated state) from the
    hwr runner's initial state, on the same batches (NHWC)."""

    variant = "jax_jit"

    def __init__(self, hwr: _Runner) -> None:
        import jax
        import jax.numpy as jnp
        import optax

        from hwr.interop import jax as hj

        self.name, self.batch_size, self.model, self.params = hwr.name, hwr.batch_size, hwr.model, hwr.params
        config, opt = hwr.model.config, optax.adam(1e-3)
        self.state = hj.from_hwr_state(hwr.start, config, opt)
        self.pool = [
            (jnp.asarray(b.images.permute(0, 2, 3, 1).numpy()), jnp.asarray(b.labels.numpy().astype("int32")))
            for b in hwr.pool
        ]
        self.jstep = jax.jit(hj.train_step(config, opt), donate_argnums=0)
        self.parity = _parity(hwr, self.state.params)
        self.i, self.windows, self.cpu_windows = 0, [], []
        self.compile_s = self._warm_up()

    def _step(self, batch: Any) -> Any:
        self.state, m = self.jstep(self.state, *batch)
        return m["loss"]

    def row(self) -> dict[str, Any]:
        return {**super().row(), "parity_max_abs": self.parity}


def _parity(hwr: _Runner, flax_params: Any) -> float:
    """Largest |JAX logits - hwr logits| in eval mode on the first batch from the initial parameters."""
    import jax

    from hwr.interop import jax as hj

    x = hwr.pool[0].images.float() / 255.0  # (B, C, H, W)
    want, _ = hwr.model.apply(hwr.start.params, hwr.start.model_state, x)
    with jax.default_matmul_precision("highest"):
        got, _ = hj.apply(
            hwr.name,
            flax_params,
            jax.numpy.asarray(x.permute(0, 2, 3, 1).numpy()),
            hwr.model.config,
            state=hj.stats_to_flax(hwr.start.model_state),
        )
    return float((hj.from_jax(got) - want).abs().max())


def measure(
    names: list[str], batch_size: int, windows: int, window_s: float, *, with_jax: bool = True
) -> list[dict[str, Any]]:
    """Parameters, compile seconds, samples/s and per CPU-second (medians of interleaved windows) per family, for
    hwr's compiled step and (``with_jax``) the family's JAX twin under ``jit``."""
    runners = []
    for n in names:
        runners.append(_Runner(n, batch_size))
        if with_jax:
            runners.append(_JaxRunner(runners[-1]))
    with torch.compiler.set_stance("fail_on_recompile"):
        for _, runner in harness.rotations(runners, windows):  # rotate who goes first
            runner.window(window_s)
    return [r.row() for r in runners]


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
    cnn = {r["variant"]: r["samples_per_s"] for r in rows if r["family"] == "cnn"}
    hwr_cpu = {r["family"]: r["samples_per_cpu_s"] for r in rows if r["variant"] == "hwr_compiled"}
    cols = ["family", "variant", "params", "samples/s", "vs cnn", "per CPU-s", "JAX/hwr", "parity", "compile s"]
    cols += ["train s", "steps", "epochs", "test acc"] if trained else []
    table = []
    for r in rows:
        ref = cnn.get(r["variant"])
        jax_row = r["variant"] == "jax_jit"
        cells = [
            r["family"],
            r["variant"],
            f"{r['params']:,}",
            f"{r['samples_per_s']:,.0f}",
            f"{r['samples_per_s'] / ref:.2f}" if ref else "-",
            f"{r['samples_per_cpu_s']:,.0f}",
            f"{r['samples_per_cpu_s'] / hwr_cpu[r['family']]:.2f}" if jax_row and r["family"] in hwr_cpu else "-",
            f"{r['parity_max_abs']:.1e}" if jax_row else "-",
            f"{r['compile_s']:.1f}",
        ]
        if trained:
            cells += (
                [f"{r['train_s']:.0f}", str(r["steps"]), f"{r['epochs']:.2f}", f"{100 * r['test_accuracy']:.2f}%"]
                if "train_s" in r
                else ["-"] * 4
            )
        table.append(cells)
    harness.print_table(
        "model families (hwr compiled pure step, JAX jit twin)", cols, table, left=("family", "variant"), width=140
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--families", default="cnn,rnn,vit", help="comma-separated registered families")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--windows", type=int, help="timed windows per row (median reported; default 5, quick 3)")
    p.add_argument("--window-s", type=float, help="seconds per timed window (default 1.0, quick 0.5)")
    p.add_argument("--quick", action="store_true", help="3 windows of 0.5 s (unless given)")
    p.add_argument("--no-jax", action="store_true", help="skip the jax_jit rows")
    p.add_argument("--train-seconds", type=float, default=0.0, help="also train each family on MNIST this long")
    p.add_argument("--lr", type=float, default=3e-3, help="one-cycle peak learning rate for --train-seconds")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = sorted(set(names) - set(models.names()))
    if unknown:
        p.error(f"unknown families {unknown}; choose from {models.names()}")
    from hwr.cli import environment

    environment.start()
    load_before = os.getloadavg()
    windows = args.windows or (3 if args.quick else 5)
    window_s = args.window_s or (0.5 if args.quick else 1.0)
    rows = measure(names, args.batch_size, windows, window_s, with_jax=not args.no_jax)
    if args.train_seconds > 0:
        for row in (r for r in rows if r["variant"] == "hwr_compiled"):
            torch._dynamo.reset()  # a fresh cache per family keeps clear of dynamo's recompile limit
            row.update(
                train_budget(
                    row["family"], args.train_seconds, row["samples_per_s"], batch_size=args.batch_size, lr=args.lr
                )
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
            "windows": windows,
            "window_s": window_s,
            "hwr_threads": os.environ.get("HWR_THREADS"),
        }
        if not args.no_jax:
            import jax

            meta["jax"] = jax.__version__
        harness.write_json(args.json, {"meta": meta, "results": rows})
    return rows


if __name__ == "__main__":
    main()
