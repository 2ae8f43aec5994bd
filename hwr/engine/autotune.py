"""The fastest compiled train step for this machine: time the equivalent compile configurations once, keep the
choice.

The same pure step compiles several ways that compute the same function but run at very different speeds, and
which one wins depends on the machine (on an AVX2 CPU, channels-last convolutions with ATen kernels run the seed
CNN's step 1.5x faster than inductor's default loops; on a GPU, CUDA graphs remove the launch overhead of a small
step). A ``Candidate`` names one configuration: the model in channels-last order (``hwr.engine.perf.channels_last``, a
change of the model wrapper, which is why this module builds the step itself), inductor options
(``hwr.engine.perf.ATEN_GRAPH``) or a ``torch.compile`` mode (``reduce-overhead``: CUDA graphs).

``compile_step(model, optimizer, objective, example_state, example_batch)`` compiles every candidate, checks its first
step against the eager step (the loss within ``atol``, the gradient norm and the updates within float rounding as
Adam amplifies it, see ``_mismatch``; a candidate that fails to compile or differs is rejected with its reason), times a few steps of each (interleaved rounds, the best round of each,
the device synchronised), and returns the fastest step with a ``Choice`` that records what was measured. The
choice is cached per configuration and machine in ``autotune.json`` under the inductor cache directory, so a
later process compiles only the chosen candidate (and still checks it against the eager step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwr import files, optim, tree
from hwr.engine import perf, runtime, train
from hwr.errors import HwrError
from hwr.losses import Loss
from hwr.models import Model

__all__ = [
    "CACHE_FILE",
    "FLIP_SHARE",
    "GRAD_RTOL",
    "UPDATE_RTOL",
    "Candidate",
    "Choice",
    "UnequalStep",
    "build_core",
    "build_step",
    "check_step",
    "compare",
    "compile_step",
    "default_candidates",
    "inductor",
]

CACHE_FILE = "autotune.json"
GRAD_RTOL = 1e-3  # a candidate's gradient norm may differ from the eager step's by this much (relative)
UPDATE_RTOL = 0.1  # and each parameter's update by this much (relative L2); see _mismatch
FLIP_SHARE = 0.01  # or at most this share of a leaf's elements by more than rounding (_few_flips); bf16 passes more
Step = Callable[[train.TrainState, Any], tuple[train.TrainState, train.Metrics]]
Batch = Any  # a task's batch: a NamedTuple of tensors (hwr.data.batches.Batch, a strings batch)


@dataclass(frozen=True)
class Candidate:
    """One way to compile the step: model wrapper (``channels_last``), inductor ``options`` or a ``mode``."""

    name: str
    channels_last: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    mode: str | None = None


INDUCTOR = Candidate("inductor")
_SHARED = (  # the candidates of every device; a CPU build adds perf.CPU_BUILD
    INDUCTOR,
    Candidate("channels_last+aten", channels_last=True, options=perf.ATEN_GRAPH),
    Candidate("channels_last+inductor", channels_last=True),
)
CPU_CANDIDATES = tuple(dataclasses.replace(c, options=perf.CPU_BUILD | c.options) for c in _SHARED)
CUDA_CANDIDATES = (
    *_SHARED,
    Candidate("cudagraphs", mode="reduce-overhead"),
    Candidate("channels_last+cudagraphs", channels_last=True, mode="reduce-overhead"),
)


@dataclass(frozen=True)
class Choice:
    """What ``compile_step`` chose and why: seconds per step of each candidate timed (best round), the rejected
    ones with their reason, whether the choice came from the cache, and the cache key (configuration + machine)."""

    candidate: Candidate
    seconds_per_step: dict[str, float]
    rejected: dict[str, str]
    cached: bool
    key: str
    machine: str

    def speedup(self, over: str = INDUCTOR.name) -> float | None:
        """The chosen step's speed over candidate ``over`` (None where ``over`` was not timed)."""
        base, mine = self.seconds_per_step.get(over), self.seconds_per_step.get(self.candidate.name)
        return base / mine if base and mine else None


def inductor(device: torch.device) -> Candidate:
    """The plain inductor candidate of ``device`` (the one a single compile without timing takes)."""
    return (CUDA_CANDIDATES if device.type == "cuda" else CPU_CANDIDATES)[0]


def default_candidates(device: torch.device, params: Any) -> tuple[Candidate, ...]:
    """The candidates worth timing: CUDA graphs only on CUDA, channels-last only for a model with 4-D kernels."""
    cands = CUDA_CANDIDATES if device.type == "cuda" else CPU_CANDIDATES
    has_conv = any(isinstance(t, torch.Tensor) and t.dim() == 4 for t in tree.leaves(params))
    return tuple(c for c in cands if has_conv or not c.channels_last)


def build_step(
    candidate: Candidate,
    model: Model,
    optimizer: optim.GradientTransformation,
    objective: train.Objective | Loss,
    **step_kwargs: Any,
) -> Step:
    """``candidate``'s compiled step: ``train.train_step`` over the (wrapped) model, through ``train.compile``."""
    step_model = perf.channels_last(model) if candidate.channels_last else model
    step = train.train_step(step_model, optimizer, objective, **step_kwargs)
    return train.compile(step, mode=candidate.mode, **candidate.options)


def build_core(candidate: Candidate, model: Model, parts: train.Parts) -> train.HyperStep:
    """``candidate``'s compiled ``train.hyper_step(model, parts)``: ``(state, batch, hp) -> (state, metrics)``."""
    step_model = perf.channels_last(model) if candidate.channels_last else model
    return train.compile(train.hyper_step(step_model, parts), mode=candidate.mode, **candidate.options)


class UnequalStep(HwrError, RuntimeError):
    """No compile candidate asked for computes the eager step here (each one's reason in the message)."""


def _none_equal(rejected: dict[str, str], device: torch.device, params: Any) -> UnequalStep:
    """The error naming why each candidate was rejected and the fix: another candidate, or no compile."""
    why = "; ".join(f"{name}: {reason}" for name, reason in rejected.items())
    others = [c.name for c in default_candidates(device, params) if c.name not in rejected]
    other = f"choose another candidate ({', '.join(others)}: --compile-candidate) or " if others else ""
    return UnequalStep(
        f"no compile configuration gives a step equal to the eager one here ({why}); {other}train eagerly "
        "(--no-compile)"
    )


def compile_step(
    model: Model,
    optimizer: optim.GradientTransformation | None,
    objective: train.Objective | Loss | None,
    example_state: train.TrainState,
    example_batch: Batch,
    *,
    candidates: Sequence[Candidate] | None = None,
    tag: str = "",
    cache: bool = True,
    atol: float = 1e-5,
    loss_rtol: float | None = None,
    flip_share: float = FLIP_SHARE,
    steps: int = 3,
    rounds: int = 3,
    hyper: tuple[train.Parts, Any] | None = None,
    **step_kwargs: Any,
) -> tuple[Step, Choice]:
    """The fastest of ``candidates`` (default ``default_candidates``) for this step and machine, and the record of
    the choice. ``step_kwargs`` go to ``train.train_step`` (``transform``, ...); ``tag`` names what else makes two
    configurations differ (an augmentation, a recipe), since closures cannot be compared. Every candidate's first
    step must compute the eager step (``_mismatch``: the loss within ``loss_rtol``, default ``atol``; bf16 steps
    pass a wider one, ``hwr.engine.execution.LOSS_RTOL``, and a wider ``flip_share``). ``example_state`` is not
    modified.
    ``hyper=(parts, hp)`` compiles ``train.hyper_step(model, parts)`` instead (``optimizer`` and ``objective`` are
    then ``parts(hp)``'s) and returns it bound to ``hp`` (a ``train.Bound``: its ``core`` serves other values).
    Raises ``UnequalStep`` (an ``HwrError``: one line from the CLI) if no candidate compiles to an equal step."""
    device = example_state.step.device
    cands = tuple(candidates or default_candidates(device, example_state.params))
    by_name = {c.name: c for c in cands}
    machine = _machine(device)
    key = _cache_key(model, example_state, example_batch, cands, tag, machine)
    if hyper is not None:
        optimizer, objective = hyper[0](hyper[1])
        build = lambda c: train.Bound(build_core(c, model, hyper[0]), hyper[1])
    else:
        build = lambda c: build_step(c, model, optimizer, objective, **step_kwargs)
    want = train.train_step(model, optimizer, objective, **step_kwargs)(example_state, example_batch)
    check = lambda fn: _mismatch(fn, example_state, example_batch, want, atol, loss_rtol, flip_share)
    rejected: dict[str, str] = {}

    saved = _read_cache().get(key) if cache else None
    if saved and saved.get("candidate") in by_name:
        chosen = by_name[saved["candidate"]]
        fn = build(chosen)
        reason = check(fn)
        if reason is None:
            return fn, Choice(chosen, dict(saved.get("seconds_per_step", {})), {}, True, key, machine)
        rejected[chosen.name] = f"cached choice no longer equal: {reason}"
    runs = _equal_candidates([c for c in cands if c.name not in rejected], build, check, example_state, rejected)
    if not runs:
        raise _none_equal(rejected, device, example_state.params)
    seconds = _time(runs, example_batch, device, steps=steps, rounds=rounds)
    best = min(seconds, key=seconds.__getitem__)
    if cache:
        entry = {"candidate": best, "seconds_per_step": seconds, "rejected": rejected, "machine": machine}
        _write_cache(key, {**entry, "model": model.name, "tag": tag, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    return runs[best][0], Choice(by_name[best], seconds, rejected, False, key, machine)


def check_step(
    step: Step,
    reference: Step,
    state: train.TrainState,
    batch: Batch,
    atol: float = 1e-5,
    loss_rtol: float | None = None,
    flip_share: float = FLIP_SHARE,
) -> str | None:
    """None if ``step``'s first step from ``state`` computes what ``reference`` (the eager step) computes, within
    the tolerances ``compile_step`` holds every candidate to (``_mismatch``), else what differs."""
    return _mismatch(step, state, batch, reference(state, batch), atol, loss_rtol, flip_share)


def _equal_candidates(
    cands: Sequence[Candidate],
    build: Callable[[Candidate], Step],
    check: Callable[[Step], str | None],
    state: train.TrainState,
    rejected: dict[str, str],
) -> dict[str, list[Any]]:
    """``{name: [step, state]}`` of the candidates that compile to a step equal to the eager one; the others go
    into ``rejected`` with their reason (a configuration this machine cannot compile is simply not a candidate)."""
    runs: dict[str, list[Any]] = {}
    for c in cands:
        try:
            fn = build(c)
            reason = check(fn)
        except Exception as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if reason is None:
            runs[c.name] = [fn, state]
        else:
            rejected[c.name] = reason
    return runs


def _relative(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / scale.double().norm().clamp_min(1e-30))


def _few_flips(got: torch.Tensor, want: torch.Tensor, change: torch.Tensor, atol: float, share: float) -> bool:
    """True if at most ``share`` of a leaf's elements (at least one) differ beyond rounding: Adam's first update is
    about ``lr * sign(g)`` per element, so a gradient within rounding of zero (a batch-norm bias over a channel that
    the batch leaves dead) becomes ``+lr`` in one step and ``-lr`` in the other, and in a leaf of 32 that one element
    is 35% of the update's norm. bf16 rounds 65,000 times coarser: on an Intel Xeon with AMX the strings recipe's
    compiled bf16 step flipped 3 of the first convolution's 288 weights (1.04%) against the eager bf16 step, and
    1% refused every candidate. A wrong computation moves most elements."""
    off = (got.double() - want.double()).abs() > atol + 0.1 * change.double().abs()
    return int(off.sum()) <= max(1, math.floor(share * off.numel()))


def _mismatch(
    fn: Step,
    state: train.TrainState,
    batch: Batch,
    want: tuple[train.TrainState, train.Metrics],
    atol: float,
    loss_rtol: float | None = None,
    flip_share: float = FLIP_SHARE,
) -> str | None:
    """None if ``fn``'s first step computes what the eager step ``want`` computed, else what differs: the loss
    within ``atol`` (relative), the gradient norm within ``GRAD_RTOL`` and each parameter and state leaf's change
    within ``UPDATE_RTOL`` (relative L2). Not elementwise: float32 sums in another order differ by rounding,
    and Adam's ``g / (sqrt(v) + eps)`` turns that rounding in near-zero gradients into update differences of a
    good part of ``lr`` (measured on the seed CNN at batch 128: the eager step's own conv-weight gradients are
    off a float64 reference by 1.7e-5, the compiled ones by 1e-8; their Adam updates then differ by 2% relative).
    A wrong computation (a layout, a missing term) moves the loss, the gradient norm or the updates by their own
    size."""
    return compare(fn(state, batch), want, state, atol, loss_rtol, flip_share)


def compare(
    got: tuple[train.TrainState, train.Metrics],
    want: tuple[train.TrainState, train.Metrics],
    state: train.TrainState,
    atol: float = 1e-5,
    loss_rtol: float | None = None,
    flip_share: float = FLIP_SHARE,
) -> str | None:
    """None if the step outputs ``got`` match the eager step's ``want`` from ``state`` within ``_mismatch``'s
    tolerances, else what differs (for steps already run, e.g. one trial of a vmapped step). ``loss_rtol`` (default
    ``atol``) bounds the loss alone; ``atol`` stays the updates' absolute floor, so a wider loss tolerance (bf16)
    never lets a wrong update through; ``flip_share`` bounds the share of a leaf's elements whose update may differ
    beyond rounding (``_few_flips``)."""
    got_state, got_m = got
    ref_state, ref_m = want
    loss_rtol = atol if loss_rtol is None else loss_rtol
    err = _relative(got_m["loss"], ref_m["loss"], ref_m["loss"])
    if not err <= loss_rtol:
        return f"loss differs from the eager step's by {err:.2e} (relative) > {loss_rtol:g}"
    if "grad_norm" in ref_m and "grad_norm" in got_m:
        err = _relative(got_m["grad_norm"], ref_m["grad_norm"], ref_m["grad_norm"])
        if not err <= GRAD_RTOL:
            return f"gradient norm differs from the eager step's by {err:.2e} (relative) > {GRAD_RTOL:g}"
    if not (torch.equal(got_state.step, ref_state.step) and torch.equal(got_state.key, ref_state.key)):
        return "the step counter or the key differs from the eager step's"
    for part in ("params", "model_state", "opt_state"):  # the optimizer's moments and counters too
        before = tree.flatten_names(getattr(state, part))
        got, ref = tree.flatten_names(getattr(got_state, part)), tree.flatten_names(getattr(ref_state, part))
        for k, r in ref.items():
            if not r.is_floating_point():  # a step counter: equal or wrong
                if not torch.equal(got[k], r):
                    return f"{part}.{k} differs from the eager step's ({got[k].tolist()} against {r.tolist()})"
                continue
            if not r.numel():
                continue
            change = r.double() - before[k].double()
            err = _relative(got[k], r, change)
            close = err <= UPDATE_RTOL or float((got[k].double() - r.double()).abs().max()) <= atol
            flips = r.numel() > 1 and _few_flips(got[k], r, change, atol, flip_share)  # a counter has no flips
            if not (close or flips):
                return f"{part}.{k}: its update differs from the eager step's by {err:.2e} (relative) > {UPDATE_RTOL:g}"
    return None


def _time(
    runs: dict[str, list[Any]], batch: Batch, device: torch.device, *, steps: int, rounds: int
) -> dict[str, float]:
    """Best-round seconds per step of each run, rounds interleaved (who goes first rotates) so that load from other
    processes hits every candidate alike; each run advances its own state."""
    names = list(runs)
    best = dict.fromkeys(names, float("inf"))
    for r in range(rounds + 1):  # round 0 warms up (allocator, caches) and is not counted
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, state = runs[name]
            runtime.synchronize(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                state, _m = fn(state, batch)
            runtime.synchronize(device)
            runs[name][1] = state
            if r:
                best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


def _machine(device: torch.device) -> str:
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return f"{device.type}: {runtime.device_name(device)}{threads}, torch {torch.__version__}"


def _cache_key(
    model: Model, state: train.TrainState, batch: Batch, cands: Sequence[Candidate], tag: str, machine: str
) -> str:
    """A stable digest of what decides the choice: the model, the shapes, the candidates, the tag, the machine."""
    shapes = {k: [list(v.shape), str(v.dtype)] for k, v in batch._asdict().items()}
    desc = {
        "model": model.name,
        "config": repr(model.config),
        "batch": shapes,
        "tag": tag,
        "machine": machine,
        "params": tree.num_params(state.params),
        "candidates": [dataclasses.asdict(c) for c in cands],
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cache_path() -> Path:
    return runtime.inductor_cache_path() / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, entry: dict[str, Any]) -> None:
    """Merge ``entry`` into the cache file, atomically (a concurrent writer can at worst drop one entry)."""
    data = _read_cache()
    data[key] = entry
    files.write_json(_cache_path(), data)
