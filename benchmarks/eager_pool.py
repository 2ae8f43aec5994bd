"""Eager max-pool on the CPU: ``hwr.nn.max_pool2d`` (ATen's channels-last kernel, bitwise ``F.max_pool2d``) against
``F.max_pool2d`` on NCHW activations, alone and inside the seed CNN's eager train step.

Windows of the two alternate in one process (so load from other processes hits both alike); each figure is the
median window. Before timing, each pair is checked to give the same values, gradients and train step to the bit;
a difference stops the run. The step's baseline is the same CNN with its pool swapped back to ``F.max_pool2d``.

    HWR_THREADS=1 python benchmarks/eager_pool.py               # the README's levers row
    python benchmarks/eager_pool.py --quick --json out.json     # small shapes, two windows: its own check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F

from hwr import losses, nn, optim, random, tree
from hwr.cli import environment
from hwr.data.batches import Batch
from hwr.engine import train
from hwr.models import cnn

POOLS = [((32, 32, 28, 28), 2), ((128, 32, 28, 28), 2), ((1000, 32, 28, 28), 2), ((32, 32, 32, 160), 2)]
POOLS += [((32, 128, 8, 40), (2, 1))]
QUICK_POOLS = [((4, 8, 12, 14), 2), ((4, 8, 8, 20), (2, 1))]


def _median_ms(fns: dict[str, Callable[[], object]], calls: int, windows: int) -> dict[str, float]:
    """Median ms per call of each function, their windows alternating."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(windows):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t0) / calls * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _pool_row(shape: tuple[int, ...], kernel: int | tuple[int, int], calls: int, windows: int) -> dict:
    """One activation shape: the check, then both pools timed with their backward and without."""
    x = random.normal(random.key(0), shape).requires_grad_()
    ours, theirs = nn.max_pool2d(x, kernel, ceil_mode=True), F.max_pool2d(x, kernel, ceil_mode=True)
    g_ours, g_theirs = (torch.autograd.grad(y.square().sum(), x)[0] for y in (ours, theirs))
    if not (torch.equal(ours, theirs) and torch.equal(g_ours, g_theirs)):
        raise SystemExit(f"hwr.nn.max_pool2d differs from F.max_pool2d on {shape}: not bitwise; nothing timed")
    pools = {"F.max_pool2d": F.max_pool2d, "hwr.nn.max_pool2d": nn.max_pool2d}
    grad = _median_ms(
        {k: lambda f=f: f(x, kernel, ceil_mode=True).sum().backward() for k, f in pools.items()}, calls, windows
    )
    with torch.no_grad():
        infer = _median_ms({k: lambda f=f: f(x, kernel, ceil_mode=True) for k, f in pools.items()}, calls, windows)
    return {"what": "pool", "shape": list(shape), "kernel": kernel, "with_backward_ms": grad, "no_grad_ms": infer}


def _nchw_pool(_block: int, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2)


def _step_row(b: int, calls: int, windows: int) -> dict:
    """The seed CNN's eager train step (Adam, cross-entropy) at batch ``b`` with each pool: the CNN's own is
    ``hwr.nn.max_pool2d``; the baseline swaps in ``F.max_pool2d`` during its windows."""
    model, opt = cnn.model(cnn.CNNConfig()), optim.adam(1e-3)
    step = train.train_step(model, opt, train.classifier(losses.cross_entropy))
    k_x, k_y = random.split(random.key(b))
    images = random.randint(k_x, (b, 1, 28, 28), 0, 256).to(torch.uint8)
    batch = Batch(images, random.randint(k_y, (b,), 0, 10), torch.ones(b, dtype=torch.bool))
    state = train.init_state(model, opt, random.key(0))

    def baseline() -> train.TrainState:
        with mock.patch.object(cnn, "_halve", _nchw_pool):
            return step(state, batch)[0]

    ours, theirs = step(state, batch)[0], baseline()
    if not all(torch.equal(a, c) for a, c in zip(tree.leaves(ours), tree.leaves(theirs), strict=True)):
        raise SystemExit(f"the train step at batch {b} differs between the pools: not bitwise; nothing timed")
    ms = _median_ms({"F.max_pool2d": baseline, "hwr.nn.max_pool2d": lambda: step(state, batch)}, calls, windows)
    return {"what": "eager train step", "batch": b, "step_ms": ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, batch 8, two windows of two calls")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10, help="calls per timed window")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    environment.start()  # HWR_THREADS, the allocator, as hwr's commands apply them
    windows, calls = (2, 2) if args.quick else (args.windows, args.calls)
    rows = [_pool_row(shape, kernel, calls, windows) for shape, kernel in (QUICK_POOLS if args.quick else POOLS)]
    rows += [_step_row(b, calls, windows) for b in ([8] if args.quick else [32, 128])]
    for r in rows:
        pair = r.get("with_backward_ms") or r["step_ms"]
        where = f"{r['shape']} kernel {r['kernel']}" if r["what"] == "pool" else f"batch {r['batch']}"
        ratio = pair["F.max_pool2d"] / pair["hwr.nn.max_pool2d"]
        line = f"{r['what']:16} {where:34} {pair['F.max_pool2d']:8.2f} -> {pair['hwr.nn.max_pool2d']:8.2f} ms"
        extra = ""
        if r["what"] == "pool":
            ng = r["no_grad_ms"]
            extra = f"   no grad {ng['F.max_pool2d']:7.2f} -> {ng['hwr.nn.max_pool2d']:7.2f} ms"
            extra += f" ({ng['F.max_pool2d'] / ng['hwr.nn.max_pool2d']:.2f}x)"
        print(f"{line} ({ratio:.2f}x){extra}")
    print(f"bitwise: values, gradients and steps equal; {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
