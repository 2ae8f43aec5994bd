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

Old ``config.json`` files carried ``compile``, ``precision`` and ``memory_format``: ``hwr.runs.read_config`` drops
them from the task's config and ``from_legacy`` maps them into an ``Execution`` (``hwr.runs.saved_execution``), so
such a run folder resumes as it was run unless told otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hwr import optim
from hwr.engine import autotune, perf, runtime, train
from hwr.errors import InputError
from hwr.losses import Loss
from hwr.models import Model

__all__ = [
    "LEGACY_EXECUTION_KEYS",
    "MEMORY_FORMATS",
    "PRECISIONS",
    "Execution",
    "eager_step",
    "from_legacy",
    "keep_candidate",
    "train_step",
]

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")  # auto: autotune chooses (compiled), contiguous (eager)
PRECISIONS = ("fp32", "bf16")
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
        **step_kwargs,
    )
    return step, {
        "compile": True,
        "memory_format": "channels_last" if choice.candidate.channels_last else "contiguous",
        "candidate": choice.candidate.name,
        "cached": choice.cached,
        "seconds_per_step": choice.seconds_per_step,
        "rejected": choice.rejected,
        "machine": choice.machine,
    }
