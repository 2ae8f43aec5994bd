"""Where and how a run executes, apart from what it is (docs/architecture.md, "Execution").

A ``RunConfig`` says what a run computes; an ``Execution`` says where and how: the device, whether the step is
compiled (and in which memory format), the precision, threads, TF32 and how often the fit loop reads metrics
back. None of it is part of a run's identity, so ``config.json`` never holds it: a run trained on a GPU resumes
or is evaluated on a CPU and the reverse (checkpoints carry no device). What a run actually used (the device's
name, the compile configuration autotune chose, its seconds per step) is recorded in ``metrics.json`` under
``"execution"``.

``train_step(execution, model, optimizer, objective, example_state, example_batch, ...)`` builds the step an
execution asks for: eager; or, when ``compile`` is on, the fastest of the equivalent compile configurations
through ``hwr.engine.autotune.compile_step`` (``memory_format="auto"``), or the fastest of those in the forced memory
format. Precision ``bf16`` wraps the model in ``hwr.engine.perf.autocast`` (bf16 matmuls and convolutions, float32
logits): it changes the numbers, the others do not.

``candidate`` pins one compile configuration by name (``hwr.engine.autotune.CUDA_CANDIDATES`` names them all)
instead of timing them: candidates round differently, so a figure reproduces exactly only under the candidate it
was measured with (``metrics.json`` records it under ``"execution"``).

``tuned_step(execution, model, Tuned(parts, hp, structure), ...)`` builds a step whose continuous values ``hp`` are
tensor inputs (``hwr.engine.train.hyper_step``): compiled, it is compiled once per structure in a process and reused
by every later ``Tuned`` of that structure (a study's trials), so a new value never recompiles.

Old ``config.json`` files carried ``compile``, ``precision`` and ``memory_format``: ``hwr.runs.read_config`` drops
them from the task's config and ``from_legacy`` maps them into an ``Execution`` (``hwr.runs.saved_execution``), so
such a run folder resumes as it was run unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from hwr import optim, tree
from hwr.engine import autotune, perf, runtime, stacked, train
from hwr.errors import InputError
from hwr.losses import Loss
from hwr.models import Model
from hwr.tree import PyTree

__all__ = [
    "FLIP_SHARE",
    "LEGACY_EXECUTION_KEYS",
    "LOSS_RTOL",
    "MEMORY_FORMATS",
    "PRECISIONS",
    "Execution",
    "Tuned",
    "eager_step",
    "from_legacy",
    "keep_candidate",
    "release_shared",
    "stacked_step",
    "train_step",
    "tuned_step",
]

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")  # auto: autotune chooses (compiled), contiguous (eager)
PRECISIONS = ("fp32", "bf16")
# How far a compiled step's first loss may sit from the eager step's (relative) before autotune refuses it: bf16
# keeps 8 bits of mantissa, so a fused, reordered graph and the eager ops round differently (the strings recipe's
# loss under autocast: 2e-5 apart, where float32 keeps 1e-5 with room). The loss alone: the gradient-norm and
# update checks keep their float32 tolerances, so a wrong learning rate or update is refused at any precision
LOSS_RTOL = {"fp32": 1e-5, "bf16": 1e-3}
# And the share of a leaf's elements whose first update may flip sign (a gradient within rounding of zero) against
# the eager step's: bf16 rounds near-zero gradients of the first layers more often (``autotune._few_flips``)
FLIP_SHARE = {"fp32": 0.01, "bf16": 0.05}
LEGACY_EXECUTION_KEYS = ("compile", "precision", "memory_format")  # config.json fields before Execution existed
Step = Callable[[train.TrainState, Any], tuple[train.TrainState, train.Metrics]]


@dataclass(frozen=True)
class Execution:
    """How a run executes. ``device``: ``auto`` (the first CUDA GPU when usable, else the CPU), ``cpu``, ``cuda``,
    ``cuda:N`` (``hwr.engine.runtime.resolve_device``); ``compile``: ``torch.compile`` the step (autotuned);
    ``precision``: ``fp32`` or ``bf16`` (autocast); ``memory_format``: ``auto`` (autotune picks among the compile
    configurations, channels-last ones included; eager runs stay contiguous), ``contiguous`` or ``channels_last``
    (``hwr.engine.perf.channels_last``: same function); ``threads``: torch intra-op threads (0: leave as set, e.g. by
    ``HWR_THREADS``); ``tf32``: TF32 matmuls on CUDA (process-wide, ``runtime.set_tf32``); ``sync_every``: steps
    between the fit loop's host reads of the metrics (``train.fit``); ``candidate``: a compile configuration by
    name (``""``: autotune times them and picks)."""

    device: str = "auto"
    compile: bool = True
    precision: str = "fp32"
    memory_format: str = "auto"
    threads: int = 0
    tf32: bool = False
    sync_every: int = 50
    candidate: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not self.device:
            raise InputError(f"device must be a device name (auto, cpu, cuda, cuda:N), got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise InputError(f"memory_format must be one of {MEMORY_FORMATS}, got {self.memory_format!r}")
        names = [c.name for c in autotune.CUDA_CANDIDATES]
        if self.candidate and self.candidate not in names:
            raise InputError(f"unknown compile candidate {self.candidate!r}; choose one of {names}")
        if self.threads < 0 or self.sync_every < 1:
            raise InputError(f"threads must be >= 0 and sync_every >= 1, got {self.threads}, {self.sync_every}")

    def resolve(self) -> torch.device:
        """The ``torch.device`` to run on; ``ValueError`` naming the fix when this machine lacks it."""
        return runtime.resolve_device(self.device)

    def configure(self, device: torch.device) -> None:
        """Apply the process-wide settings: threads (when set) and TF32 on a CUDA device."""
        if self.threads:
            torch.set_num_threads(self.threads)
        if device.type == "cuda":
            runtime.set_tf32(self.tf32)


def from_legacy(values: dict[str, Any], base: Execution | None = None) -> Execution:
    """``base`` (default ``Execution()``) with the execution fields an old ``config.json`` (a ``RunConfig``
    before the split) carried: ``compile``, ``precision`` and ``memory_format`` map to the ``Execution`` fields
    of the same name (``LEGACY_EXECUTION_KEYS``); a current ``config.json`` changes nothing."""
    found = {k: values[k] for k in LEGACY_EXECUTION_KEYS if k in values}
    return dataclasses.replace(base or Execution(), **found)


def eager_step(
    execution: Execution,
    model: Model,
    optimizer: optim.GradientTransformation,
    objective: train.Objective | Loss,
    **step_kwargs: Any,
) -> Step:
    """The uncompiled train step under ``execution``'s precision and memory format (``auto``: contiguous)."""
    model = perf.autocast(model, "bfloat16") if execution.precision == "bf16" else model
    model = perf.channels_last(model) if execution.memory_format == "channels_last" else model
    return train.train_step(model, optimizer, objective, **step_kwargs)


def keep_candidate(execution: Execution, recorded: str | None, device: torch.device) -> Execution:
    """``execution`` pinned to the compile candidate a run recorded when it started (a resume then continues with
    the kernels it began with: candidates round differently). Unchanged when the step runs eagerly, a candidate
    is already pinned, a memory format is forced (the user asked for another choice), nothing was recorded, or the
    recorded candidate does not exist on ``device`` (CUDA graphs resumed on a CPU)."""
    every = autotune.CUDA_CANDIDATES if device.type == "cuda" else autotune.CPU_CANDIDATES
    if not execution.compile or execution.candidate or execution.memory_format != "auto" or not recorded:
        return execution
    if recorded not in {c.name for c in every}:
        return execution
    return dataclasses.replace(execution, candidate=recorded)


def _candidates(execution: Execution, device: torch.device) -> tuple[autotune.Candidate, ...] | None:
    """The compile candidates ``execution`` allows on ``device``: the pinned one, those of a forced memory format,
    or None (autotune's defaults for the device and model)."""
    every = autotune.CUDA_CANDIDATES if device.type == "cuda" else autotune.CPU_CANDIDATES
    if execution.candidate:
        pinned = tuple(c for c in every if c.name == execution.candidate)
        if not pinned:
            raise InputError(f"compile candidate {execution.candidate!r} needs a CUDA device; this run is on {device}")
        return pinned
    if execution.memory_format == "auto":
        return None
    want = execution.memory_format == "channels_last"
    return tuple(c for c in every if c.channels_last == want)


def _tolerance(execution: Execution) -> dict[str, float]:
    """What a compiled step's first step may differ from the eager one's by at ``execution``'s precision: the loss
    (``LOSS_RTOL``) and the share of a leaf's first updates flipped (``FLIP_SHARE``); updates keep their float32
    floor at every precision."""
    return {"loss_rtol": LOSS_RTOL[execution.precision], "flip_share": FLIP_SHARE[execution.precision]}


def train_step(
    execution: Execution,
    model: Model,
    optimizer: optim.GradientTransformation,
    objective: train.Objective | Loss,
    example_state: train.TrainState,
    example_batch: Any,
    *,
    tag: str = "",
    **step_kwargs: Any,
) -> tuple[Step, dict[str, Any]]:
    """The train step ``execution`` asks for, and a JSON-ready record of how it was built (``memory_format``
    resolved; for a compiled step autotune's choice: candidate, seconds per step of each, rejected ones, whether
    cached, the machine). ``step_kwargs`` go to ``train.train_step`` (``transform``, ``mix``); ``tag`` names what
    else distinguishes the configuration for autotune's cache. ``example_state`` is not modified.

    Compiled, ``memory_format="auto"`` times autotune's default candidates for the device and model; a forced
    format times only the candidates in that format (on a CPU ``contiguous`` leaves plain inductor alone)."""
    if not execution.compile:
        channels_last = execution.memory_format == "channels_last"
        step = eager_step(execution, model, optimizer, objective, **step_kwargs)
        return step, {"compile": False, "memory_format": "channels_last" if channels_last else "contiguous"}
    model = perf.autocast(model, "bfloat16") if execution.precision == "bf16" else model
    candidates = _candidates(execution, example_state.step.device)
    step, choice = autotune.compile_step(
        model,
        optimizer,
        objective,
        example_state,
        example_batch,
        candidates=candidates,
        tag=f"{tag}|{execution.precision}",
        **_tolerance(execution),
        **step_kwargs,
    )
    return step, _record(choice)


# ---------------------------------------------------------------------------------------------- shared steps


class Tuned(NamedTuple):
    """A step's continuous values apart from its structure. ``parts(hp) -> (optimizer, objective)`` reads every
    value from ``hp`` (a pytree of tensors on the run's device: learning rate, weight decay, tau, class weights,
    mixing alphas, augmentation magnitudes, a schedule's length ...) and decides only what to build; ``structure``
    names everything else ``parts`` depends on: two ``Tuned`` of one structure must build the same computation for
    any ``hp``. Why an argument and not the ``TrainState``: nothing in ``hp`` changes during training, so it is
    no part of what a step returns or a checkpoint keeps (``config.json`` holds the values)."""

    parts: train.Parts
    hp: PyTree
    structure: str


_SHARED: dict[str, tuple[train.HyperStep, autotune.Choice]] = {}  # structure key -> compiled step and choice
_ENTRIES = {"compiled": 0}  # versions of the shared step's code dynamo holds (all share one code object)


def release_shared() -> None:
    """Forget every shared compiled step and reset dynamo (a fresh compile budget)."""
    torch._dynamo.reset()
    _SHARED.clear()
    _ENTRIES["compiled"] = 0


def _shared_key(
    execution: Execution, model: Model, tuned: Tuned, state: train.TrainState, batch: Any, candidates: Any
) -> str:
    """What a shared compiled step is reused for: the structure, the model, the shapes, device and candidates."""
    shapes = {k: [list(v.shape), str(v.dtype)] for k, v in batch._asdict().items()}
    desc = {
        "structure": tuned.structure,
        "model": [model.name, repr(model.config), tree.num_params(state.params)],
        "batch": shapes,
        "device": str(state.step.device),
        "precision": execution.precision,
        "candidates": None if candidates is None else [c.name for c in candidates],
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tuned_step(
    execution: Execution,
    model: Model,
    tuned: Tuned,
    example_state: train.TrainState,
    example_batch: Any,
    *,
    tag: str = "",
) -> tuple[Step, dict[str, Any]]:
    """``train_step`` for a step given as ``Tuned``: eager, ``train.hyper_step`` bound to ``tuned.hp``; compiled,
    one compiled ``hyper_step`` per structure in this process, shared by every ``Tuned`` of that structure
    (a study's trials: new values never recompile; ``record["shared"]`` says the step was reused). A reused
    step's first step is still checked against the eager one (``autotune.check_step``); a mismatch means two
    structures were named alike and raises ``RuntimeError``. Dynamo keeps at most ``recompile_limit`` versions
    of one code object, so when a new structure would pass it every shared step is released first."""
    if not execution.compile:
        model = perf.autocast(model, "bfloat16") if execution.precision == "bf16" else model
        channels_last = execution.memory_format == "channels_last"
        model = perf.channels_last(model) if channels_last else model
        step = train.Bound(train.hyper_step(model, tuned.parts), tuned.hp)
        return step, {"compile": False, "memory_format": "channels_last" if channels_last else "contiguous"}
    model = perf.autocast(model, "bfloat16") if execution.precision == "bf16" else model
    device = example_state.step.device
    candidates = _candidates(execution, device)
    key = _shared_key(execution, model, tuned, example_state, example_batch, candidates)
    if key in _SHARED:
        core, choice = _SHARED[key]
        step = train.Bound(core, tuned.hp)
        eager = train.Bound(train.hyper_step(model, tuned.parts), tuned.hp)
        reason = autotune.check_step(step, eager, example_state, example_batch, **_tolerance(execution))
        if reason is not None:
            raise RuntimeError(
                f"the compiled step shared under structure {key} differs from this run's eager step ({reason}): "
                "the structure misses a choice that shapes the step, or the step reads a value that is not in hp"
            )
        shared = True
    else:
        n = len(candidates or autotune.default_candidates(device, example_state.params))
        if _ENTRIES["compiled"] + n > torch._dynamo.config.recompile_limit:
            release_shared()
        step, choice = autotune.compile_step(
            model,
            None,
            None,
            example_state,
            example_batch,
            candidates=candidates,
            tag=f"{tag}|{execution.precision}",
            hyper=(tuned.parts, tuned.hp),
            **_tolerance(execution),
        )
        _ENTRIES["compiled"] += n
        _SHARED[key] = (step.core, choice)
        shared = False
    return step, {**_record(choice), "shared": shared}


def stacked_step(
    execution: Execution,
    model: Model,
    tuned: Tuned,
    example_states: train.TrainState,
    example_batches: Any,
    example_hps: PyTree,
) -> tuple[stacked.StackedStep, dict[str, Any]]:
    """K trials of ``tuned``'s structure in one step: ``hwr.engine.stacked.vmapped(train.hyper_step(model,
    tuned.parts))`` over stacked states, batches and values (``stacked.stack_trials``), under ``execution``'s
    precision and memory format; compiled, through one candidate (the pinned one, else plain inductor in the
    forced memory format: timing K trials per candidate would cost more than it saves), shared in this process by
    every group of ``tuned.structure`` and K, and its first step checked against the eager one on the examples,
    trial by trial (``_check_each_trial``; ``RuntimeError`` naming the trial that differs). The record says how it
    was built."""
    model = perf.autocast(model, "bfloat16") if execution.precision == "bf16" else model
    device, k = example_states.step.device, stacked.trials_of(example_states)
    candidate = autotune.inductor(device)
    if execution.compile and execution.candidate:
        candidate = _candidates(execution, device)[0]
    channels_last = candidate.channels_last or execution.memory_format == "channels_last"
    model = perf.channels_last(model) if channels_last else model
    eager = stacked.vmapped(train.hyper_step(model, tuned.parts))
    record = {"compile": False, "memory_format": "channels_last" if channels_last else "contiguous", "trials": k}
    if not execution.compile:
        return eager, record
    group = tuned._replace(structure=f"vmapped {k} | {channels_last} | {tuned.structure}")
    key = _shared_key(execution, model, group, example_states, example_batches, (candidate,))
    shared = key in _SHARED
    if not shared:
        if _ENTRIES["compiled"] + 1 > torch._dynamo.config.recompile_limit:
            release_shared()
        core = train.compile(eager, mode=candidate.mode, **candidate.options)
        _ENTRIES["compiled"] += 1
        _SHARED[key] = (core, autotune.Choice(candidate, {}, {}, False, key, ""))
    core = _SHARED[key][0]
    _check_each_trial(core, eager, example_states, example_batches, example_hps, key, **_tolerance(execution))
    name = candidate.name if candidate.channels_last or not channels_last else f"channels_last+{candidate.name}"
    return core, {**record, "compile": True, "candidate": name, "shared": shared}


def _check_each_trial(
    core: stacked.StackedStep,
    eager: stacked.StackedStep,
    states: Any,
    batches: Any,
    hps: PyTree,
    key: str,
    loss_rtol: float = LOSS_RTOL["fp32"],
    flip_share: float = FLIP_SHARE["fp32"],
) -> None:
    """``RuntimeError`` unless the compiled vmapped step's first step equals the eager one for every trial apart
    (``autotune.compare`` per trial: a check over the stacked leaves would dilute one wrong trial among K)."""
    got, want = core(states, batches, hps), eager(states, batches, hps)
    per = lambda out: zip(tree.unstack(out[0]), tree.unstack(out[1]), strict=True)
    for i, (g, w, s) in enumerate(zip(per(got), per(want), tree.unstack(states), strict=True)):
        reason = autotune.compare(g, w, s, loss_rtol=loss_rtol, flip_share=flip_share)
        if reason is not None:
            raise RuntimeError(
                f"trial {i} of the vmapped compiled step of structure {key} differs from eager: {reason}"
            )


def _record(choice: autotune.Choice) -> dict[str, Any]:
    return {
        "compile": True,
        "memory_format": "channels_last" if choice.candidate.channels_last else "contiguous",
        "candidate": choice.candidate.name,
        "cached": choice.cached,
        "seconds_per_step": choice.seconds_per_step,
        "rejected": choice.rejected,
        "machine": choice.machine,
    }
