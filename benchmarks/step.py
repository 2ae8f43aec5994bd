"""Throughput of one training step of the seed CNN: eager PyTorch, compiled PyTorch, hwr's pure step, JAX, ensembles.

Every variant trains the same model (``--config``, default the seed CNN) from the same initial parameters (JAX
through ``hwr.interop.jax``) on the same uint8 batches, in one process. Variants run interleaved (A B C A B C, the
first variant rotating each round) so that load from other processes hits all of them alike; each figure is the
median of ``--windows`` timed windows of about ``--window-s`` seconds after warm-up. Columns:

- samples/s: per model; an ensemble of K models in one step counts K*B samples per step (per-member throughput);
- ratio: samples/s over ``eager_module`` (``nn.Module`` + ``torch.optim.Adam``, what a user would write) at the
  same batch size;
- per CPU-s and its ratio: samples per second of process CPU time (user + system, all threads). With one thread
  (``HWR_THREADS=1``) it ignores the time other processes take the core, so it is the steadier figure on a shared
  machine; with several threads it also counts threads spinning at barriers;
- GFLOP/s and % peak: FLOPs of forward + backward per sample counted by ``torch.utils.flop_counter`` on one eager
  step (convolutions and matmuls; elementwise ops and pooling not counted), over the fp32 peak measured with a
  2048x2048 matmul (or ``--peak-gflops``);
- step MiB: the rise of the process's resident set over one step above its level after ``malloc_trim(0)``, sampled
  every 0.5 ms (transient memory of a step: activations, gradients, the new state; the live state is excluded);
- compile s: the first call minus one steady step (tracing + compiling, or loading from the inductor cache; the
  ``cache`` column says which happened, from inductor's FX-graph-cache counters), and ``warm``: the same function
  recompiled in-process after ``torch._dynamo.reset()``, served from the on-disk cache the first compile filled or
  found (JAX: the persistent compilation cache in ``.cache/jax``); measured at the first batch size only.
  ``--fresh-cache`` starts from empty caches, so the first compile is cold.

- the ``torch.compile`` peers (``compiled_module``, ``compiled_step_module``) compile with ``dynamic=False``: the
  static graph a user compiling at one batch size gets (without it, the second batch size in this process
  recompiled the same function with a dynamic batch dimension);
- hwr_compiled: ``hwr.engine.autotune.compile_step``, the fastest of the equivalent compile configurations for this
  machine (timed once, cached under the inductor cache; ``autotune`` in the JSON says which won and each one's
  seconds per step); ``hwr_compiled_inductor`` is inductor with torch.compile's own defaults (no ``perf.CPU_BUILD``), ``hwr_compiled_fast`` the
  channels-last + ATen-kernel configuration named explicitly.

GPU (``--device cuda``; ``auto`` picks it when present): batches, parameters and keys live on the GPU, every timed
window ends with ``torch.cuda.synchronize``, "step MiB" is ``torch.cuda.max_memory_allocated`` over one step above
the memory allocated before it (``gpu_max_allocated_mib``: the absolute peak), and % peak is against a matmul peak
measured on that GPU (fp32, or TF32 with ``--tf32``; ``peak_bf16_gflops`` for the bf16 rows). The GPU adds CUDA-graph
variants (``mode="reduce-overhead"``), bf16 autocast and vmapped ensembles up to K=64 members. JAX runs on the CPU
only, so ``jax_jit`` is left out there.

Threads: torch uses ``HWR_THREADS`` (default: all cores); JAX uses XLA's own pool. On a machine other processes
share, two OpenMP threads lose much of their time waiting at barriers for a preempted partner; ``HWR_THREADS=1``
gives steadier figures there.

    python benchmarks/step.py                       # batch 128 and 512, all variants (< 5 min with a warm cache)
    HWR_THREADS=1 python benchmarks/step.py         # one torch thread: steady on a shared machine
    python benchmarks/step.py --quick --json out.json
    python benchmarks/step.py --variants eager_module,hwr_compiled --batch-sizes 64 --windows 3 --steps 2
    python benchmarks/step.py --device cuda --quick --json gpu.json [--tf32] [--no-warm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import harness, reference

WINDOW_S, WINDOWS, QUICK_WINDOW_S, QUICK_WINDOWS = 0.6, 5, 0.4, 3


@dataclass
class Runner:
    """One variant at one batch size: ``step(i)`` trains on pool batch ``i``; ``block()`` waits for async work."""

    name: str
    members: int
    step: Callable[[int], Any]
    block: Callable[[Any], None] = lambda out: None
    compiled: str = ""  # "", "torch" or "jax"
    first_s: float = 0.0
    cache: str = "-"
    warm_s: float | None = None
    step_s: float = 0.0
    windows: list[float] = field(default_factory=list)
    cpu_windows: list[float] = field(default_factory=list)
    step_mib: float | None = None
    gpu_max_mib: float | None = None
    build_s: float = 0.0  # building the runner (the autotuned variant compiles its candidates here)
    autotune: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class ModulePeer:
    """How a PyTorch user runs the reference ``nn.Module``: NCHW or channels-last (module and inputs), the forward
    alone compiled or the whole step (forward, backward and ``optimizer.step()``) in one ``torch.compile``d
    function, compiled autograd for that step's backward, Adam's ``foreach`` or ``fused`` kernels, bf16 autocast."""

    channels_last: bool = False
    compile: str = ""  # "", "forward" or "step"
    compiled_autograd: bool = False
    adam: str = "default"  # "default" (torch's choice for the device), "foreach" or "fused"
    bf16: bool = False


def _adam(module: Any, kind: str) -> Any:
    import torch

    extra = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[kind]
    return torch.optim.Adam(module.parameters(), lr=1e-3, **extra)


def _module_runner(cfg: Any, params: dict, pool: list, peer: ModulePeer) -> Runner:
    import contextlib

    import torch
    import torch.nn.functional as F

    from hwr.engine import runtime

    device = pool[0].images.device
    module = reference.module(cfg, params).to(device)  # what a user would write, with hwr's initial parameters
    layout = torch.channels_last if peer.channels_last else torch.contiguous_format
    module = module.to(memory_format=layout)
    opt = _adam(module, peer.adam)
    forward = torch.compile(module, dynamic=False) if peer.compile == "forward" else module
    inputs = [b.images.contiguous(memory_format=layout) for b in pool]

    def train_step(images: Any, labels: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if peer.bf16 else contextlib.nullcontext()
        with cast:
            logits = forward(images.float() / 255.0)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        return loss.detach()

    fn = torch.compile(train_step, dynamic=False) if peer.compile == "step" else train_step

    def step(i: int) -> Any:
        j = i % len(pool)
        ctx = torch._dynamo.config.patch(compiled_autograd=True) if peer.compiled_autograd else None
        with ctx or contextlib.nullcontext():  # traces loss.backward() into the step's graphs
            return fn(inputs[j], pool[j].labels)

    return Runner("", 1, step, block=lambda out: runtime.synchronize(device), compiled="torch" if peer.compile else "")


def _donating(step_fn: Callable) -> Callable:
    """``step_fn`` that writes the new parameters and optimizer state into the old state's buffers (donation in
    the JAX sense: the caller promises never to read the old state again) and returns those buffers."""
    from hwr import tree

    def step(state: Any, batch: Any) -> Any:
        new, metrics = step_fn(state, batch)
        tree.map(lambda old, t: old.copy_(t), (state.params, state.opt_state), (new.params, new.opt_state))
        return new._replace(params=state.params, opt_state=state.opt_state), metrics

    return step


def _inductor_region(opt: Any) -> Any:
    """``opt`` whose update is annotated for inductor: inside an ``ATEN_GRAPH`` step that region alone is fused
    into generated C++ loops instead of running as separate ATen kernels."""
    import torch

    def update(grads: Any, state: Any, params: Any = None) -> Any:
        with torch.fx.traceback.annotate({"compile_with_inductor": {}}):
            return opt.update(grads, state, params)

    return opt._replace(update=update)


def _ensemble(
    model: Any, opt: Any, step_fn: Callable, params: dict, key: Any, members: int, device: Any
) -> tuple[Any, Callable]:
    """K models in one step: their stacked states (the first from ``params``) and ``step_fn`` vmapped over them,
    the batch shared."""
    import torch

    from hwr import random, tree
    from hwr.engine import train

    inits = [params] + [model.init(k) for k in random.split(random.key(99, device=device), members - 1)]
    states = [train.init_state(model, opt, random.fold_in(key, m), params=p) for m, p in enumerate(inits)]
    state = tree.stack(states)

    def fn(s: Any, batch: Any) -> Any:
        return torch.func.vmap(step_fn, in_dims=(0, None))(s, batch)

    return state, fn


def _autotune_record(choice: Any) -> dict[str, Any]:
    """What ``autotune.compile_step`` chose and each candidate's time, for the JSON rows."""
    return {
        "candidate": choice.candidate.name,
        "cached": choice.cached,
        "machine": choice.machine,
        "seconds_per_step": choice.seconds_per_step,
        "rejected": choice.rejected,
    }


def _hwr_runner(
    name: str,
    model: Any,
    params: dict,
    pool: list,
    *,
    compiled: bool,
    members: int = 1,
    options: dict | None = None,
    donate: bool = False,
    fuse_optimizer: bool = False,
    mode: str | None = None,
    autotuned: bool = False,
    candidates: tuple[str, ...] | None = None,
) -> Runner:
    import torch

    from hwr import losses, optim, random, tree
    from hwr.engine import autotune, runtime, train

    device = pool[0].images.device
    opt = optim.adam(1e-3)
    opt = _inductor_region(opt) if fuse_optimizer else opt
    step_fn = train.train_step(model, opt, losses.cross_entropy)
    step_fn = _donating(step_fn) if donate else step_fn
    params = tree.map(torch.clone, params) if donate else params  # donation overwrites: never the shared copy
    key = random.key(0, device=device)
    record = None
    if members == 1:
        state = train.init_state(model, opt, key, params=params)
        fn = step_fn
    else:  # K models in one step: vmap over stacked states, the batch shared
        state, fn = _ensemble(model, opt, step_fn, params, key, members, device)
    if autotuned:
        cands = autotune.default_candidates(device, params)
        cands = tuple(c for c in cands if c.name in candidates) if candidates else None
        if cands == ():
            raise SystemExit(f"none of the compile candidates {list(candidates or ())} applies to this model")
        fn, choice = autotune.compile_step(model, opt, losses.cross_entropy, state, pool[0], candidates=cands)
        record = _autotune_record(choice)
    elif compiled:
        fn = train.compile(fn, mode=mode, **(options or {}))
    holder = [state]

    def step(i: int) -> Any:
        holder[0], metrics = fn(holder[0], pool[i % len(pool)])
        return metrics

    return Runner(
        name,
        members,
        step,
        block=lambda out: runtime.synchronize(device),
        compiled="torch" if compiled or autotuned else "",
        autotune=record,
    )


def _jax_runner(name: str, cfg: Any, params: dict, pool: list) -> Runner:
    import jax
    import jax.numpy as jnp
    import optax

    from hwr.interop import jax as hj

    fparams = jax.tree_util.tree_map(jnp.array, hj.to_flax(params, cfg))  # own copies: donation may reuse them
    opt = optax.adam(1e-3)
    images = [jnp.array(b.images.permute(0, 2, 3, 1).numpy()) for b in pool]  # uint8 (B, H, W, C)
    labels = [jnp.array(b.labels.numpy().astype("int32")) for b in pool]

    def train_step(state: Any, x: jax.Array, y: jax.Array) -> Any:
        p, opt_state = state

        def objective(p: Any) -> Any:
            logits = hj.cnn_apply(p, x.astype(jnp.float32) / 255.0, cfg, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(p)
        updates, opt_state = opt.update(grads, opt_state, p)
        metrics = {"loss": loss, "correct": (logits.argmax(-1) == y).sum()}
        return (optax.apply_updates(p, updates), opt_state), metrics

    jitted = jax.jit(train_step, donate_argnums=0)
    holder = [(fparams, opt.init(fparams))]

    def step(i: int) -> Any:
        holder[0], metrics = jitted(holder[0], images[i % len(pool)], labels[i % len(pool)])
        return metrics

    return Runner(name, 1, step, block=jax.block_until_ready, compiled="jax")


def _seed_order(model: Any) -> Any:
    """``model`` (the CNN) with the seed's relu-then-pool order, for measuring the reorder ``hwr.models.cnn`` makes."""

    def apply(params: dict, state: dict, x: Any, **kwargs: Any) -> Any:
        return reference.seed_order_apply(model.config, params, state, x), state

    return model._replace(apply=apply, name="cnn_seed_order")


# The strongest configurations a PyTorch user writes in a few lines, each its own row (README "Benchmarks").
PEERS = {
    "eager_module": ModulePeer(),
    "eager_module_channels_last": ModulePeer(channels_last=True),
    "eager_module_channels_last_foreach": ModulePeer(channels_last=True, adam="foreach"),
    "eager_module_channels_last_fused": ModulePeer(channels_last=True, adam="fused"),
    "eager_module_bf16": ModulePeer(channels_last=True, bf16=True),
    "compiled_module": ModulePeer(compile="forward"),
    "compiled_step_module": ModulePeer(channels_last=True, compile="step", adam="fused"),
    "compiled_step_module_ca": ModulePeer(channels_last=True, compile="step", compiled_autograd=True, adam="fused"),
}


def _peer(cfg: Any, peer: ModulePeer) -> Callable[[dict, list], Runner]:
    return lambda p, pool: _module_runner(cfg, p, pool, peer)


def _variants(cfg: Any, candidates: tuple[str, ...] | None = None) -> dict[str, Callable[[dict, list], Runner]]:
    """Variant name -> ``build(params, pool)``. The default run uses ``default_variants``; the others isolate one
    lever each (``--variants``) for the levers table. ``candidates``: the compile candidates ``hwr_compiled``'s
    autotune times (None: all of the device's)."""
    from hwr.engine import perf
    from hwr.models import cnn

    model = cnn.model(cfg)
    cl, aten, graphs = perf.channels_last(model), perf.ATEN_GRAPH, "reduce-overhead"

    def hwr(m: Any, **kw: Any) -> Callable[[dict, list], Runner]:
        return lambda p, pool: _hwr_runner("", m, p, pool, **kw)

    return {
        **{name: _peer(cfg, peer) for name, peer in PEERS.items()},
        "hwr_eager": hwr(model, compiled=False),
        # what hwr.engine.autotune picks for this machine (among ``candidates``: --candidates)
        "hwr_compiled": hwr(model, compiled=True, autotuned=True, candidates=candidates),
        "hwr_compiled_inductor": hwr(model, compiled=True),  # torch.compile's own defaults (no perf.CPU_BUILD)
        "hwr_compiled_fast": hwr(cl, compiled=True, options=aten),  # channels-last + ATen kernels in one graph
        "jax_jit": lambda p, pool: _jax_runner("", cfg, p, pool),
        **{f"hwr_ensemble_k{k}": hwr(model, compiled=True, members=k) for k in (4, 8, 16, 32, 64)},
        "hwr_compiled_fast_bf16": hwr(perf.autocast(cl), compiled=True, options=aten),
        # GPU: CUDA graphs (one replay per step, no per-kernel launch overhead), bf16 on the tensor cores
        "hwr_compiled_cudagraphs": hwr(model, compiled=True, mode=graphs),
        "hwr_compiled_cudagraphs_channels_last": hwr(cl, compiled=True, mode=graphs),
        "hwr_compiled_cudagraphs_bf16": hwr(perf.autocast(model), compiled=True, mode=graphs),
        # single levers
        "hwr_eager_seed_order": hwr(_seed_order(model), compiled=False),
        "hwr_compiled_seed_order": hwr(_seed_order(model), compiled=True),
        "hwr_eager_channels_last": hwr(cl, compiled=False),
        "hwr_compiled_channels_last": hwr(cl, compiled=True),
        "hwr_compiled_aten": hwr(model, compiled=True, options=aten),
        "hwr_compiled_bf16": hwr(perf.autocast(model), compiled=True),
        "hwr_ensemble_k4_fast": hwr(cl, compiled=True, members=4, options=aten),
        "hwr_compiled_fast_donate": hwr(cl, compiled=True, options=aten, donate=True),
        "hwr_compiled_fast_fused_adam": hwr(cl, compiled=True, options=aten, fuse_optimizer=True),
    }


DEFAULT_VARIANTS = (
    *PEERS,
    "jax_jit",
    "hwr_eager",
    "hwr_compiled",
    "hwr_compiled_fast_bf16",  # only where the CPU has native bf16 (hwr.engine.perf.has_bf16), unless named in --variants
    "hwr_ensemble_k8",
)
# the peers hwr's default step is measured against: every way a PyTorch user runs the module, and JAX's jit
PEER_NAMES = (*PEERS, "jax_jit")
CUDA_VARIANTS = (
    "eager_module",
    "compiled_module",
    "hwr_eager",
    "hwr_compiled",
    "hwr_compiled_inductor",
    "hwr_compiled_cudagraphs",
    "hwr_compiled_cudagraphs_bf16",
    "hwr_compiled_bf16",
    "hwr_ensemble_k4",
    "hwr_ensemble_k16",
    "hwr_ensemble_k64",
)
CUDA_QUICK_VARIANTS = (  # fits a short GPU lease: the autotuned row times inductor, channels-last and CUDA graphs
    "eager_module",
    "hwr_eager",
    "hwr_compiled",
    "hwr_compiled_cudagraphs_bf16",
    "hwr_ensemble_k8",
    "hwr_ensemble_k64",
)


def default_variants(device_type: str, quick: bool) -> tuple[str, ...]:
    """The variants a run without ``--variants`` measures on ``device_type``."""
    if device_type == "cuda":
        return CUDA_QUICK_VARIANTS if quick else CUDA_VARIANTS
    return DEFAULT_VARIANTS


# ---------------------------------------------------------------------------------------------- measuring


def _time_steps(runner: Runner, n: int, start: int) -> float:
    return harness.time_steps(runner.step, n, start, runner.block)[0]


def flops_per_sample(cfg: Any, params: dict, batch_size: int = 8) -> float:
    """Forward + backward FLOPs per sample of one eager step (what actually runs: no input gradient for the
    first layer), counted by ``torch.utils.flop_counter`` over convolutions and matmuls."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from hwr import tree
    from hwr.models import cnn

    model = cnn.model(cfg)
    p = tree.map(lambda t: t.detach().clone().requires_grad_(True), params)
    x = torch.rand(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    y = torch.zeros(batch_size, dtype=torch.int64)
    with FlopCounterMode(display=False) as counter:
        logits, _ = model.apply(p, model.init_state(), x, train=True)
        F.cross_entropy(logits, y).backward()
    return counter.get_total_flops() / batch_size


def _build(
    builder: Callable[[dict, list], Runner],
    name: str,
    params: dict,
    pool: list,
    batch_size: int,
    log: Callable[[str], None],
) -> Runner:
    """Build one variant and time its first call net of one steady step (compiling, or loading from a cache)."""
    hits, misses = harness.inductor_cache_counts()
    t0 = time.perf_counter()
    runner = builder(params, pool)
    runner.build_s = time.perf_counter() - t0
    runner.name = name
    t0 = time.perf_counter()
    runner.block(runner.step(0))
    runner.first_s = time.perf_counter() - t0 + (runner.build_s if runner.autotune else 0.0)
    if runner.compiled == "torch":
        hits2, misses2 = harness.inductor_cache_counts()
        runner.cache = "cold" if misses2 > misses else "warm" if hits2 > hits else "-"
    elif runner.compiled == "jax":
        runner.cache = "jax"
    runner.step_s = _time_steps(runner, 1, 1)
    runner.first_s = max(runner.first_s - runner.step_s, 0.0)
    log(f"  b={batch_size} {name}: first call {runner.first_s:.1f} s ({runner.cache}), step {runner.step_s:.3f} s")
    return runner


def _measure_warm(runners: list[Runner]) -> None:
    """Drop dynamo's and JAX's in-memory caches and time each compiled variant's recompile from the on-disk caches."""
    import torch

    torch._dynamo.reset()
    if any(r.compiled == "jax" for r in runners):
        import jax

        jax.clear_caches()
    for r in runners:
        if r.compiled:
            t0 = time.perf_counter()
            r.block(r.step(2))
            r.warm_s = max(time.perf_counter() - t0 - r.step_s, 0.0)


def _measure_windows(
    runners: list[Runner], batch_size: int, windows: int, window_s: float, steps: int | None, device: Any
) -> None:
    """Time the interleaved windows (samples per wall and per CPU second), then the memory of one step each."""
    import torch

    for r in runners:  # warm-up after the recompile, and steps per window from a steady step time
        r.step_s = _time_steps(r, 1, 3)
    n_steps = {r.name: steps or max(1, round(window_s / max(r.step_s, 1e-6))) for r in runners}
    stride = max(n_steps.values())  # each round of windows starts at a fresh step number
    with torch.compiler.set_stance("fail_on_recompile"):
        for w, r in harness.rotations(runners, windows):
            n = n_steps[r.name]
            seconds, cpu = harness.time_steps(r.step, n, 4 + w * stride, r.block)
            r.windows.append(n * batch_size * r.members / seconds)
            r.cpu_windows.append(n * batch_size * r.members / max(cpu, 1e-9))
        step_no = 4 + windows * stride
        for r in runners:
            once = lambda r=r: r.block(r.step(step_no))
            if device.type == "cuda":
                r.step_mib, r.gpu_max_mib = harness.gpu_step_memory_mib(once, device)
            else:
                r.step_mib = harness.step_memory_mib(once)


def bench_batch_size(
    builders: dict[str, Callable[[dict, list], Runner]],
    names: list[str],
    cfg: Any,
    batch_size: int,
    *,
    windows: int,
    window_s: float,
    steps: int | None,
    log: Callable[[str], None],
    measure_warm: bool = True,
    device: Any = "cpu",
) -> list[Runner]:
    """Build, compile and time ``names`` at ``batch_size`` on ``device``; returns the runners with their
    measurements. ``measure_warm``: also recompile every compiled variant from the on-disk caches (``warm_s``)."""
    import torch

    from hwr import random
    from hwr.models import cnn

    device = torch.device(device)
    params = cnn.model(cfg).init(random.key(0, device=device))
    pool = harness.synthetic_pool(cfg, batch_size, device)
    runners = [_build(builders[name], name, params, pool, batch_size, log) for name in names]
    # warm compile: drop dynamo's and JAX's in-memory caches and compile again from the on-disk caches
    if measure_warm and any(r.compiled for r in runners):
        _measure_warm(runners)
    _measure_windows(runners, batch_size, windows, window_s, steps, device)
    return runners


# ---------------------------------------------------------------------------------------------- report


def rows_of(
    runners: list[Runner], batch_size: int, flops: float, peak: float, peak_bf16: float | None = None
) -> list[dict[str, Any]]:
    """JSON rows: one per variant, ratios against ``eager_module`` at the same batch size (None if not run)."""
    medians = {r.name: statistics.median(r.windows) for r in runners}
    cpu_medians = {r.name: statistics.median(r.cpu_windows) for r in runners}
    ref, cpu_ref = medians.get("eager_module"), cpu_medians.get("eager_module")
    rows = []
    for r in runners:
        sps = medians[r.name]
        gflops = sps * flops / 1e9
        rows.append(
            {
                "variant": r.name,
                "batch_size": batch_size,
                "members": r.members,
                "samples_per_s": sps,
                "ratio_vs_reference": sps / ref if ref else None,
                "windows_samples_per_s": r.windows,
                "samples_per_cpu_s": cpu_medians[r.name],
                "cpu_ratio_vs_reference": cpu_medians[r.name] / cpu_ref if cpu_ref else None,
                "gflops": gflops,
                "fraction_of_fp32_peak": gflops / peak if peak else None,
                "fraction_of_bf16_peak": gflops / peak_bf16 if peak_bf16 and "bf16" in r.name else None,
                "step_peak_mib": r.step_mib,
                "gpu_max_allocated_mib": r.gpu_max_mib,
                "compile_first_s": r.first_s if r.compiled else None,
                "compile_cache": r.cache if r.compiled else None,
                "compile_warm_s": r.warm_s,
                "autotune": r.autotune,
            }
        )
    return rows


def is_bf16(variant: str) -> bool:
    """Whether a variant's forward runs under bf16 autocast (its name says so)."""
    return "bf16" in variant


BF16_HEADLINES = ("hwr_compiled_fast_bf16", "hwr_compiled_bf16")  # hwr's bf16 step, CPU then GPU


def against_peers(rows: list[dict[str, Any]], variant: str = "hwr_compiled") -> list[dict[str, Any]]:
    """Per batch size: the fastest peer of ``variant``'s precision (``PEER_NAMES``: the module however a user runs
    it, JAX's jit; a bf16 variant meets the bf16 peers, an fp32 one the fp32 peers, since bf16 buys speed with
    rounding) and ``variant``'s samples/s as a ratio to it, the README's headline table. Batch sizes without
    ``variant`` or without a peer are left out."""
    out = []
    bf16 = is_bf16(variant)
    for b in sorted({r["batch_size"] for r in rows}):
        at = {r["variant"]: r for r in rows if r["batch_size"] == b}
        peers = [at[n] for n in PEER_NAMES if n in at and is_bf16(n) == bf16]
        if variant not in at or not peers:
            continue
        best = max(peers, key=lambda r: r["samples_per_s"])
        ours = at[variant]["samples_per_s"]
        out.append(
            {
                "batch_size": b,
                "fastest_peer": best["variant"],
                "peer_samples_per_s": best["samples_per_s"],
                "variant": variant,
                "samples_per_s": ours,
                "ratio_to_fastest_peer": ours / best["samples_per_s"],
            }
        )
    return out


def _cells(r: dict[str, Any]) -> tuple[str, ...]:
    """One JSON row as the table's cells ("-" where a figure does not apply)."""
    w = r["windows_samples_per_s"]
    spread = (max(w) - min(w)) / r["samples_per_s"] if len(w) > 1 else 0.0
    return (
        r["variant"],
        str(r["batch_size"]),
        f"{r['samples_per_s']:,.0f}",
        f"±{100 * spread / 2:.0f}%",
        f"{r['ratio_vs_reference']:.2f}x" if r["ratio_vs_reference"] else "-",
        f"{r['samples_per_cpu_s']:,.0f}",
        f"{r['cpu_ratio_vs_reference']:.2f}x" if r["cpu_ratio_vs_reference"] else "-",
        f"{r['gflops']:.1f}",
        f"{100 * share:.0f}%" if (share := r["fraction_of_bf16_peak"] or r["fraction_of_fp32_peak"]) else "-",
        f"{r['step_peak_mib']:.0f}" if r["step_peak_mib"] is not None else "-",
        f"{r['compile_first_s']:.1f}" if r["compile_first_s"] is not None else "-",
        r["compile_cache"] or "-",
        f"{r['compile_warm_s']:.1f}" if r["compile_warm_s"] is not None else "-",
    )


def _print_notes(console: Any, rows: list[dict[str, Any]], env: dict[str, Any]) -> None:
    """The dim lines under the table: the machine and peaks, what autotune chose, the variants skipped."""
    gpu = (
        (
            f"{env['device_name']}, TF32 {'on' if env['tf32'] else 'off'}, bf16 peak {env['peak_bf16_gflops']:.0f} "
            "GFLOP/s; "
        )
        if env["device"].startswith("cuda")
        else ""
    )
    console.print(
        f"[dim]{gpu}{env['cpu']}, {env['threads']} threads, torch {env['torch']}, jax {env.get('jax', '-')}; "
        f"{env['peak_kind']} peak {env['peak_gflops']:.0f} GFLOP/s ({env['peak_source']}); "
        f"{env['flops_per_sample'] / 1e6:.1f} MFLOP per sample (fwd+bwd); allocator tuned: {env['allocator_tuned']}; "
        f"load average {env['load_start']:.1f} -> {env['load_end']:.1f}; {env['seconds']:.0f} s[/dim]"
    )
    for r in rows:
        if r["autotune"]:
            a = r["autotune"]
            times = ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in a["seconds_per_step"].items())
            console.print(
                f"[dim]{r['variant']} (b={r['batch_size']}): autotune chose {a['candidate']}"
                f"{' (cached)' if a['cached'] else ''}; {times}[/dim]"
            )
    if env["skipped"]:
        console.print(f"[dim]skipped: {'; '.join(env['skipped'])}[/dim]")


def print_table(rows: list[dict[str, Any]], env: dict[str, Any]) -> None:
    from rich.console import Console

    cells = [_cells(r) for r in rows]
    columns = (
        "variant",
        "batch",
        "samples/s",
        "spread",
        "ratio",
        "per CPU-s",
        "ratio",
        "GFLOP/s",
        "% peak",
        "step MiB",
        "compile s",
        "cache",
        "warm s",
    )
    console = harness.print_table(
        f"Training step throughput on {env['device']} (median of windows; ratio vs eager_module at the same batch)",
        columns,
        cells,
        left=("variant", "cache"),
        width=max(Console().width, 150),
    )
    _print_notes(console, rows, env)
    ran = {r["variant"] for r in rows}
    bf16 = next((v for v in BF16_HEADLINES if v in ran), None)
    summary = against_peers(rows) + (against_peers(rows, bf16) if bf16 else [])
    if summary:
        harness.print_table(
            "hwr's step against the fastest peer of the same precision at each batch size",
            ("hwr step", "batch", "fastest peer", "peer samples/s", "hwr samples/s", "hwr / peer"),
            [
                (
                    r["variant"],
                    str(r["batch_size"]),
                    r["fastest_peer"],
                    f"{r['peer_samples_per_s']:,.0f}",
                    f"{r['samples_per_s']:,.0f}",
                    f"{r['ratio_to_fastest_peer']:.2f}x",
                )
                for r in summary
            ],
            left=("hwr step", "fastest peer"),
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 128 only, fewer and shorter windows (< 2 min)")
    ap.add_argument("--json", type=Path, help="also write the rows as a JSON list to this path")
    ap.add_argument(
        "--variants",
        help=f"comma-separated subset of: {','.join(DEFAULT_VARIANTS)} (CPU defaults) or "
        f"{','.join(CUDA_VARIANTS)} (GPU defaults)",
    )
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    ap.add_argument("--tf32", action="store_true", help="GPU: float32 matmuls and convolutions on TF32 tensor cores")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm recompile measurement (shorter)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", help="default 16 32 128 512 (--quick: 32 128)")
    ap.add_argument("--windows", type=int, help=f"timed windows per variant (default {WINDOWS}, quick {QUICK_WINDOWS})")
    ap.add_argument("--window-s", type=float, help=f"seconds per window (default {WINDOW_S}, quick {QUICK_WINDOW_S})")
    ap.add_argument("--steps", type=int, help="fixed steps per window instead of --window-s")
    ap.add_argument("--peak-gflops", type=float, help="fp32 peak to compare against (default: measured)")
    ap.add_argument("--config", default="{}", help="CNNConfig fields as JSON, e.g. '{\"channels\": [4, 8]}'")
    ap.add_argument("--fresh-cache", action="store_true", help="empty inductor/JAX caches: the first compile is cold")
    ap.add_argument(
        "--candidates",
        help="comma-separated compile candidates hwr_compiled's autotune times (default: all of the device's; "
        "hwr.engine.autotune.CPU_CANDIDATES / CUDA_CANDIDATES name them)",
    )
    args = ap.parse_args(argv)
    if args.windows is not None and args.windows < 1:
        ap.error(f"--windows must be >= 1, got {args.windows}")
    return args


def _builders(args: argparse.Namespace, cfg: Any, names: list[str], device: Any) -> tuple[dict, str | None]:
    """The variants' builders (``hwr_compiled`` timing the ``--candidates`` named) and the refusal of an unknown
    variant or candidate (None where every name is known)."""
    chosen = tuple(args.candidates.split(",")) if args.candidates else None
    builders = _variants(cfg, chosen)
    unknown = [n for n in names if n not in builders]
    if unknown:
        return builders, f"unknown variant(s) {unknown}; choose from {sorted(builders)}"
    return builders, _unknown_candidates(chosen, device)


def _unknown_candidates(names: tuple[str, ...] | None, device: Any) -> str | None:
    """The refusal of ``--candidates`` naming a candidate this device does not have (None: all known)."""
    from hwr.engine import autotune

    known = [c.name for c in (autotune.CUDA_CANDIDATES if device.type == "cuda" else autotune.CPU_CANDIDATES)]
    unknown = [n for n in names or () if n not in known]
    return f"unknown compile candidate(s) {unknown} on {device.type}; choose from {known}" if unknown else None


def _cache_root(fresh: bool) -> Path:
    """Where the inductor and JAX caches live (a new empty folder with ``--fresh-cache``); sets
    ``TORCHINDUCTOR_CACHE_DIR``, so it must run before torch reads it."""
    cache_root = Path(tempfile.mkdtemp(prefix="hwr-bench-cache-")) if fresh else ROOT / ".cache"
    if fresh:  # before torch reads it
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root / "inductor")
    else:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root / "inductor"))
    return cache_root


def _select_variants(args: argparse.Namespace, device: Any) -> tuple[list[str], list[str], bool]:
    """The variants to run, the defaults skipped here with the reason, and whether the device has native bf16."""
    import torch

    from hwr.engine import perf

    names = args.variants.split(",") if args.variants else list(default_variants(device.type, args.quick))
    native_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else perf.has_bf16()
    skipped = []
    if not args.variants and not native_bf16:
        skipped += [
            f"{n} (no native bf16 here: autocast is several times slower than float32; name it in "
            "--variants to measure it anyway)"
            for n in names
            if "bf16" in n
        ]
    if device.type != "cpu":
        skipped += [f"{n} (JAX runs on the CPU here)" for n in names if n == "jax_jit"]
    names = [n for n in names if not any(reason.startswith(f"{n} (") for reason in skipped)]
    return names, skipped, native_bf16


def _environment(
    args: argparse.Namespace, device: Any, native_bf16: bool, skipped: list[str], names: list[str], cache_root: Path
) -> dict[str, Any]:
    """The ``env`` of the JSON rows: versions, device, threads; configures JAX's persistent cache if it runs."""
    import torch

    from hwr.engine import runtime

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": runtime.device_name(device),
        "tf32": bool(args.tf32 and device.type == "cuda"),
        "threads": torch.get_num_threads(),
        "cpu": runtime.device_name("cpu"),
        "hwr_threads": os.environ.get("HWR_THREADS"),
        "native_bf16": native_bf16,
        "skipped": skipped,
        "candidates": args.candidates.split(",") if args.candidates else None,  # hwr_compiled's, None: all
    }
    if "jax_jit" in names:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(cache_root / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        env["jax"] = jax.__version__
    return env


def _flops_and_peaks(
    args: argparse.Namespace, cfg: Any, device: Any, env: dict[str, Any]
) -> tuple[float, float, float | None]:
    """FLOPs per sample and the fp32 (or TF32) and bf16 peaks to compare against, recorded in ``env``."""
    import torch

    from hwr import random
    from hwr.models import cnn

    flops = flops_per_sample(cfg, cnn.model(cfg).init(random.key(0)))
    peak = args.peak_gflops or harness.peak_gflops(device=device)
    peak_bf16 = harness.peak_gflops(device=device, dtype=torch.bfloat16) if device.type == "cuda" else None
    side = 8192 if device.type == "cuda" else 2048
    env.update(
        peak_gflops=peak,
        peak_kind="tf32" if env["tf32"] else "fp32",
        peak_bf16_gflops=peak_bf16,
        peak_source="given" if args.peak_gflops else f"measured, {side}^2 matmul on {device}",
        flops_per_sample=flops,
    )
    return flops, peak, peak_bf16


def limit_threads(environ: dict[str, str] | Any = os.environ) -> int | None:
    """Hold every variant, JAX included, to ``HWR_THREADS`` cores: XLA keeps its own thread pool (one per core) and
    ignores torch's setting, so JAX otherwise spins threads that a per-CPU-second figure charges it for. Pins the
    process to the first N CPUs of its affinity and, for one thread, turns off XLA's multi-threaded Eigen. Must run
    before JAX is imported. Returns N, or None when the variable is unset (all cores)."""
    text = environ.get("HWR_THREADS")
    if not text:
        return None
    n = int(text)
    cpus = sorted(os.sched_getaffinity(0))
    if 0 < n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])
    if n == 1:
        flags = environ.get("XLA_FLAGS", "")
        environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    return n


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    limit_threads()
    cache_root = _cache_root(args.fresh_cache)
    from hwr.cli import environment
    from hwr.engine import runtime

    environment.start()
    allocator_tuned = os.environ.get("HWR_NO_MALLOPT") != "1"
    import torch
    import torch._dynamo

    from hwr.models import config_from_dict

    torch._dynamo.config.recompile_limit = 64  # variants share train_step's code object; keep them all compiled
    try:
        device = runtime.resolve_device(args.device)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if device.type == "cuda":
        runtime.set_tf32(args.tf32)
    names, skipped, native_bf16 = _select_variants(args, device)
    cfg = config_from_dict("cnn", json.loads(args.config))
    builders, bad = _builders(args, cfg, names, device)
    if bad:
        print(bad, file=sys.stderr)
        return 2
    env = _environment(args, device, native_bf16, skipped, names, cache_root)
    batch_sizes = args.batch_sizes or ([32, 128] if args.quick else [16, 32, 128, 512])
    windows = args.windows or (QUICK_WINDOWS if args.quick else WINDOWS)
    window_s = args.window_s or (QUICK_WINDOW_S if args.quick else WINDOW_S)
    flops, peak, peak_bf16 = _flops_and_peaks(args, cfg, device, env)
    env.update(allocator_tuned=allocator_tuned)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    log(f"variants {names}; batch sizes {batch_sizes}; {windows} windows; peak {peak:.0f} GFLOP/s")
    rows: list[dict[str, Any]] = []
    for b in batch_sizes:
        runners = bench_batch_size(
            builders,
            names,
            cfg,
            b,
            windows=windows,
            window_s=window_s,
            steps=args.steps,
            log=log,
            measure_warm=b == batch_sizes[0] and not args.no_warm,
            device=device,
        )
        rows += rows_of(runners, b, flops, peak, peak_bf16)
        del runners
    env.update(load_start=load_start, load_end=os.getloadavg()[0], seconds=time.perf_counter() - t_start)
    print_table(rows, env)
    if args.json:
        meta = {"env": env, "config": json.loads(args.config)}
        harness.write_json(args.json, [{**row, **meta} for row in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
