"""Pure optimizers in the optax shape: ``GradientTransformation(init, update)``.

``update(grads, state, params) -> (updates, new_state)`` and ``apply_updates(params, updates)`` return new
tensors; nothing is modified in place. Small transforms compose with ``chain``; ``adam = chain(scale_by_adam,
scale_by_learning_rate(schedule))``. Step counters are int64 0-d tensors, read in float64 where a bias
correction or a schedule uses them: a float32 counter drifts from ``torch.optim.Adam`` by 2e-4 after 10 steps, and a
float64 0-d input makes ``torch.compile`` trace the step twice (docs/architecture.md, measured facts). Learning
rates are schedules evaluated from the counter inside the step, so a changing rate never recompiles a compiled step.

Every continuous value (a peak rate, a schedule's length, weight decay, a clipping norm, an L2-SP strength, a
multiplier) may be a 0-d tensor instead of a number: ``hyperparameters(cfg, total_steps)`` gives a config's as
tensors and ``from_config(..., hp=)`` builds from them, so one compiled step that takes them as an input serves
every trial of a study (``hwr.engine.train.hyper_step``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils import _pytree

from hwr import tree
from hwr.errors import InputError
from hwr.tree import PyTree

Schedule = Callable[[torch.Tensor], torch.Tensor]
Scalar = float | torch.Tensor  # a Python number, or a 0-d tensor (a hyperparameter the compiled step takes as input)
ScalarOrSchedule = Scalar | Schedule

__all__ = [
    "GradientTransformation",
    "OptimConfig",
    "adam",
    "adamw",
    "add_decayed_weights",
    "add_l2_toward",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "constant",
    "cosine",
    "from_config",
    "hyperparameters",
    "masked",
    "onecycle",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_multipliers",
    "sgd",
    "step_decay",
    "trace",
]


class GradientTransformation(NamedTuple):
    """A pure optimizer (or a piece of one): ``init(params) -> state``, ``update(g, state, params) -> (u, state)``."""

    init: Callable[[PyTree], Any]
    update: Callable[[PyTree, Any, PyTree | None], tuple[PyTree, Any]]


class EmptyState(NamedTuple):
    pass


class CountState(NamedTuple):
    count: torch.Tensor  # int64 0-d: number of updates applied so far


class AdamState(NamedTuple):
    count: torch.Tensor  # int64 0-d
    mu: PyTree
    nu: PyTree


class TraceState(NamedTuple):
    trace: PyTree


def _count0(params: PyTree) -> torch.Tensor:
    ls = tree.leaves(params)
    device = ls[0].device if ls else None
    return torch.zeros((), dtype=torch.int64, device=device)


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """``params + updates`` leaf-wise, as new tensors in each parameter's dtype."""
    return tree.map(lambda p, u: p + u.to(p.dtype), params, updates)


# ---------------------------------------------------------------------------------------------- schedules


def _as_schedule(lr: ScalarOrSchedule) -> Schedule:
    if callable(lr):
        return lr
    return constant(lr if isinstance(lr, torch.Tensor) else float(lr))


def _on(value: Scalar) -> bool:
    """Whether a term is part of the optimizer: a tensor always is (its value is an input), a number when not 0."""
    return isinstance(value, torch.Tensor) or value != 0


def _at_least_one(x: Scalar) -> Scalar:
    return torch.clamp(x, min=1) if isinstance(x, torch.Tensor) else max(x, 1)


def _check_steps(name: str, steps: Scalar) -> None:
    if not isinstance(steps, torch.Tensor) and steps <= 0:  # a tensor is validated where it is made
        raise ValueError(f"{name} needs steps > 0, got {steps}")


def constant(value: Scalar) -> Schedule:
    """``lr(t) = value`` (a number, or a 0-d tensor read at each step)."""
    if isinstance(value, torch.Tensor):
        return lambda count: value.to(torch.float64).expand_as(count)
    return lambda count: torch.full_like(count, value, dtype=torch.float64)


def cosine(peak: Scalar, steps: Scalar, *, final: float = 0.0) -> Schedule:
    """Cosine decay from ``peak`` at step 0 to ``final`` at ``steps`` (held there after). ``peak`` and ``steps``
    may be 0-d float64 tensors: one compiled step then serves every value."""
    _check_steps("cosine schedule", steps)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        t = torch.clamp(count.to(torch.float64) / steps, 0.0, 1.0)
        return final + 0.5 * (peak - final) * (1.0 + torch.cos(math.pi * t))

    return schedule


def onecycle(
    peak: Scalar, steps: Scalar, *, warmup: Scalar = 0.25, initial_div: float = 25.0, final_div: float = 1e4
) -> Schedule:
    """Warm-up + cosine one-cycle: linear from ``peak/initial_div`` to ``peak`` over ``warmup*steps``, then
    cosine down to ``peak/final_div`` at ``steps`` (the shape of ``OneCycleLR`` with linear warm-up). ``peak``,
    ``steps`` and ``warmup`` may be 0-d float64 tensors."""
    tensors = any(isinstance(v, torch.Tensor) for v in (peak, steps, warmup))
    if not tensors and (steps <= 0 or not 0.0 <= warmup < 1.0):
        raise ValueError(f"onecycle needs steps > 0 and 0 <= warmup < 1, got steps={steps}, warmup={warmup}")
    up_steps = warmup * steps
    n_up = torch.round(up_steps) if isinstance(up_steps, torch.Tensor) else round(up_steps)  # 0: starts at the peak
    lo, hi, end = peak / initial_div, peak, peak / final_div

    def schedule(count: torch.Tensor) -> torch.Tensor:
        t = count.to(torch.float64)
        up = lo + (hi - lo) * torch.clamp(t / _at_least_one(n_up), 0.0, 1.0)
        frac = torch.clamp((t - n_up) / _at_least_one(steps - n_up), 0.0, 1.0)
        down = end + 0.5 * (hi - end) * (1.0 + torch.cos(math.pi * frac))
        return torch.where(t < n_up, up, down)

    return schedule


def step_decay(initial: Scalar, every: Scalar, factor: float = 0.1) -> Schedule:
    """``initial * factor ** floor(t / every)`` (as ``torch.optim.lr_scheduler.StepLR``)."""
    _check_steps("step_decay", every)
    return lambda count: (
        initial
        * torch.pow(
            torch.tensor(factor, dtype=torch.float64, device=count.device), torch.floor(count.to(torch.float64) / every)
        )
    )


# ---------------------------------------------------------------------------------------------- transforms


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transforms in order; the state is the tuple of their states."""

    def init(params: PyTree) -> tuple[Any, ...]:
        return tuple(t.init(params) for t in transforms)

    def update(grads: PyTree, state: tuple[Any, ...], params: PyTree | None = None) -> tuple[PyTree, tuple]:
        new_states = []
        for t, s in zip(transforms, state, strict=True):
            grads, s = t.update(grads, s, params)
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def scale_by_learning_rate(lr: ScalarOrSchedule) -> GradientTransformation:
    """Multiply by ``-lr(count)``; the schedule is evaluated from the int64 counter kept in the state."""
    schedule = _as_schedule(lr)

    def update(grads: PyTree, state: CountState, params: PyTree | None = None) -> tuple[PyTree, CountState]:
        step_size = schedule(state.count)
        updates = tree.map(lambda g: g * (-step_size).to(g.dtype), grads)
        return updates, CountState(state.count + 1)

    return GradientTransformation(lambda p: CountState(_count0(p)), update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam's direction ``m_hat / (sqrt(v_hat) + eps)``, computed exactly as ``torch.optim.Adam`` does it."""

    def init(params: PyTree) -> AdamState:
        return AdamState(_count0(params), tree.zeros_like(params), tree.zeros_like(params))

    def update(grads: PyTree, state: AdamState, params: PyTree | None = None) -> tuple[PyTree, AdamState]:
        count = state.count + 1
        mu = tree.map(lambda m, g: torch.lerp(m, g, 1.0 - b1), state.mu, grads)
        nu = tree.map(lambda v, g: v * b2 + (1.0 - b2) * g * g, state.nu, grads)
        t = count.to(torch.float64)
        inv_bc1 = 1.0 / (1.0 - torch.pow(torch.full_like(t, b1), t))
        bc2_sqrt = torch.sqrt(1.0 - torch.pow(torch.full_like(t, b2), t))

        def direction(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            denom = torch.sqrt(v) / bc2_sqrt.to(v.dtype) + eps
            return (m / denom) * inv_bc1.to(m.dtype)

        return tree.map(direction, mu, nu), AdamState(count, mu, nu)

    return GradientTransformation(init, update)


def trace(momentum: Scalar, *, nesterov: bool = False, dampening: float = 0.0) -> GradientTransformation:
    """Heavy-ball momentum as ``torch.optim.SGD``: ``buf = momentum*buf + (1-dampening)*g`` (``buf = g`` at
    the first step), and ``g + momentum*buf`` for Nesterov."""

    def init(params: PyTree) -> tuple[CountState, TraceState]:
        return CountState(_count0(params)), TraceState(tree.zeros_like(params))

    def update(grads: PyTree, state: tuple[CountState, TraceState], params: PyTree | None = None):
        count, tr = state
        first = count.count == 0

        def new_buf(b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            return torch.where(first, g, momentum * b + (1.0 - dampening) * g)

        buf = tree.map(new_buf, tr.trace, grads)
        out = tree.map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        return out, (CountState(count.count + 1), TraceState(buf))

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: Scalar, mask: PyTree | None = None) -> GradientTransformation:
    """``g + weight_decay * p`` (on the leaves where ``mask`` is True, all by default)."""

    def update(grads: PyTree, state: EmptyState, params: PyTree | None = None) -> tuple[PyTree, EmptyState]:
        if params is None:
            raise ValueError("add_decayed_weights needs params: call update(grads, state, params)")
        if mask is None:
            return tree.map(lambda g, p: g + weight_decay * p, grads, params), state
        return tree.map(lambda g, p, m: g + weight_decay * p if m else g, grads, params, mask), state

    return GradientTransformation(lambda p: EmptyState(), update)


def add_l2_toward(anchor: PyTree, strength: Scalar, mask: PyTree | None = None) -> GradientTransformation:
    """L2-SP (Li et al. 2018): ``g + strength * (p - anchor)``, the gradient of ``strength / 2 * ||p - anchor||^2``,
    which pulls fine-tuned parameters toward the pretrained ``anchor`` (a pytree shaped like params) instead of
    toward zero. Leaves where ``mask`` is False (freshly initialised ones, which have no anchor) get nothing."""

    def update(grads: PyTree, state: EmptyState, params: PyTree | None = None) -> tuple[PyTree, EmptyState]:
        if params is None:
            raise ValueError("add_l2_toward needs params: call update(grads, state, params)")
        if mask is None:
            return tree.map(lambda g, p, a: g + strength * (p - a), grads, params, anchor), state
        return tree.map(lambda g, p, a, m: g + strength * (p - a) if m else g, grads, params, anchor, mask), state

    return GradientTransformation(lambda p: EmptyState(), update)


def clip_by_global_norm(max_norm: Scalar) -> GradientTransformation:
    """Scale gradients by ``min(1, max_norm / (norm + 1e-6))``, as ``torch.nn.utils.clip_grad_norm_``."""

    def update(grads: PyTree, state: EmptyState, params: PyTree | None = None) -> tuple[PyTree, EmptyState]:
        norm = tree.global_norm(grads)
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        return tree.map(lambda g: g * coef.to(g.dtype), grads), state

    return GradientTransformation(lambda p: EmptyState(), update)


def scale_by_multipliers(multipliers: PyTree) -> GradientTransformation:
    """Multiply each leaf's update by a fixed factor: per-group learning-rate multipliers for fine-tuning
    (0 freezes a leaf, 0.1 slows the backbone). ``multipliers`` is a pytree of floats (or of 0-d tensors: every
    leaf is then multiplied, by 1 too) shaped like params."""

    def scaled(g: torch.Tensor, m: Scalar) -> torch.Tensor:
        return g * m if isinstance(m, torch.Tensor) or m != 1.0 else g

    def update(grads: PyTree, state: EmptyState, params: PyTree | None = None) -> tuple[PyTree, EmptyState]:
        return tree.map(scaled, grads, multipliers), state

    return GradientTransformation(lambda p: EmptyState(), update)


def _drop_frozen(multipliers: PyTree) -> GradientTransformation:
    """Zero the gradients of the leaves whose multiplier is 0 (frozen), so a global-norm clip before the
    multipliers measures the trained leaves alone; the frozen leaves' updates are 0 either way."""

    def drop(g: torch.Tensor, m: Scalar) -> torch.Tensor:
        if isinstance(m, torch.Tensor):
            return torch.where(m == 0, torch.zeros_like(g), g)
        return torch.zeros_like(g) if m == 0 else g

    def update(grads: PyTree, state: EmptyState, params: PyTree | None = None) -> tuple[PyTree, EmptyState]:
        return tree.map(drop, grads, multipliers), state

    return GradientTransformation(lambda p: EmptyState(), update)


def masked(inner: GradientTransformation, mask: PyTree) -> GradientTransformation:
    """Apply ``inner`` only to leaves where ``mask`` (a pytree of bools shaped like params) is True; other
    leaves' gradients pass through unchanged (optax semantics). The inner state covers masked leaves only."""

    def select(t: PyTree) -> list[Any]:
        return [x for x, m in zip(tree.leaves(t), tree.leaves(mask), strict=True) if m]

    def init(params: PyTree) -> Any:
        return inner.init(select(params))

    def update(grads: PyTree, state: Any, params: PyTree | None = None) -> tuple[PyTree, Any]:
        tree.assert_same_structure(grads, mask)
        sub, state = inner.update(select(grads), state, None if params is None else select(params))
        it = iter(sub)
        flat = [next(it) if m else g for g, m in zip(tree.leaves(grads), tree.leaves(mask), strict=True)]
        return _pytree.tree_unflatten(flat, tree.structure(grads)), state

    return GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------- aliases


def sgd(
    lr: ScalarOrSchedule,
    momentum: Scalar = 0.0,
    *,
    nesterov: bool = False,
    weight_decay: Scalar = 0.0,
) -> GradientTransformation:
    """SGD with optional (Nesterov) momentum and L2 weight decay, matching ``torch.optim.SGD`` (a tensor
    ``momentum`` or ``weight_decay`` is on, whatever its value)."""
    parts = []
    if _on(weight_decay):
        parts.append(add_decayed_weights(weight_decay))
    if _on(momentum):
        parts.append(trace(momentum, nesterov=nesterov))
    return chain(*parts, scale_by_learning_rate(lr))


def adam(lr: ScalarOrSchedule = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam, matching ``torch.optim.Adam`` (float64 bias corrections)."""
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr))


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: Scalar = 1e-2,
    mask: PyTree | None = None,
) -> GradientTransformation:
    """AdamW (decoupled weight decay), matching ``torch.optim.AdamW``: ``p -= lr * (adam_dir + wd * p)``."""
    return chain(scale_by_adam(b1, b2, eps), add_decayed_weights(weight_decay, mask), scale_by_learning_rate(lr))


# ---------------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule. ``schedule``: constant | cosine | onecycle | step (x0.1 every third of training).
    ``lr`` is the peak rate for ``onecycle``/``cosine``."""

    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    schedule: str = "constant"
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    warmup: float = 0.25
    clip_norm: float = 0.0  # 0: no clipping

    def __post_init__(self) -> None:
        if self.name not in ("adam", "adamw", "sgd"):
            raise InputError(f"unknown optimizer {self.name!r}; choose adam, adamw or sgd")
        if self.schedule not in ("constant", "cosine", "onecycle", "step"):
            raise InputError(f"unknown schedule {self.schedule!r}; choose constant, cosine, onecycle or step")
        if not self.lr > 0:
            raise InputError(f"learning rate must be > 0, got {self.lr}")


def hyperparameters(cfg: OptimConfig, total_steps: int, device: torch.device | str | None = None) -> dict:
    """The continuous values of ``cfg`` and the schedule's length as float64 0-d tensors on ``device``: what
    ``from_config(..., hp=)`` reads instead of the config's numbers, so a compiled step that takes them as an
    input serves every learning rate, weight decay and length."""
    return {k: torch.tensor(float(v), dtype=torch.float64, device=device) for k, v in _values(cfg, total_steps).items()}


def _values(cfg: OptimConfig, total_steps: Scalar) -> dict[str, Scalar]:
    names = ("lr", "weight_decay", "momentum", "warmup", "clip_norm")
    return {**{k: getattr(cfg, k) for k in names}, "total_steps": total_steps}


def from_config(
    cfg: OptimConfig,
    total_steps: int,
    multipliers: PyTree | None = None,
    *,
    extra: Sequence[GradientTransformation] = (),
    hp: dict[str, torch.Tensor] | None = None,
) -> GradientTransformation:
    """The optimizer an ``OptimConfig`` names, its schedule spanning ``total_steps``: clipping (when set), the
    ``extra`` gradient terms (L2-SP), weight decay and the optimizer's own scaling, then per-leaf learning-rate
    ``multipliers`` (fine-tuning: 0 freezes a leaf). With ``hp`` (``hyperparameters``), the values come from
    those tensors and only the choices (optimizer, schedule, which terms are on) from ``cfg``."""
    v = _values(cfg, total_steps) if hp is None else hp
    steps = v["total_steps"]
    # three levels (lr, lr/10, lr/100) over the run: ceil, so a length not divisible by 3 gets no fourth level
    every = torch.clamp(torch.ceil(steps / 3), min=1) if isinstance(steps, torch.Tensor) else max(-(-steps // 3), 1)
    schedule: ScalarOrSchedule = {
        "constant": lambda: v["lr"],
        "cosine": lambda: cosine(v["lr"], steps),
        "onecycle": lambda: onecycle(v["lr"], steps, warmup=v["warmup"]),
        "step": lambda: step_decay(v["lr"], every),
    }[cfg.schedule]()
    decay = v["weight_decay"] if cfg.weight_decay else 0.0
    parts = [clip_by_global_norm(v["clip_norm"])] if cfg.clip_norm > 0 else []
    if parts and multipliers is not None:  # a frozen leaf has no gradient to clip (torch: requires_grad=False)
        parts.insert(0, _drop_frozen(multipliers))
    parts += list(extra)
    if cfg.name == "sgd":
        momentum = v["momentum"] if cfg.momentum else 0.0
        parts.append(sgd(schedule, momentum, nesterov=cfg.nesterov, weight_decay=decay))
    elif cfg.name == "adamw":
        parts.append(adamw(schedule, weight_decay=v["weight_decay"]))
    else:
        parts += [add_decayed_weights(decay)] if cfg.weight_decay else []
        parts.append(adam(schedule))
    if multipliers is not None:
        parts.append(scale_by_multipliers(multipliers))
    return chain(*parts)
