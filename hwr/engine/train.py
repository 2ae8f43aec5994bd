"""The training step as one pure function, its evaluation twin, the compile helper and the fit loop.

``train_step(model, optimizer, objective)`` returns ``step(state, batch) -> (state, metrics)``: it derives this
step's keys from ``fold_in(state.key, state.step)``, lets the task's ``Objective`` turn the batch into the model's
input (augment, normalise, mix), takes ``torch.func.grad_and_value`` of the objective's loss, applies the
optimizer and returns a new ``TrainState``. Every task trains through this one step: the digit classifier
(``classifier(loss)``, or a plain loss) and the CTC strings model (``hwr.tasks.strings.step.ctc_objective``). Nothing is
modified in place, so the same function runs eagerly, under ``torch.compile(fullgraph=True)`` or ``vmap``.

``hyper_step(model, parts)`` is the same step with its continuous hyperparameters as an argument: ``(state, batch,
hp)``, the optimizer and objective built inside from ``parts(hp)``, so one compiled step serves every learning
rate, weight decay, augmentation magnitude ... (``Bound`` binds ``hp``; ``hwr.engine.execution.tuned_step``
shares it between the runs of one structure).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.func import grad_and_value

from hwr import optim, random, tree
from hwr.data.batches import Batch, to_float
from hwr.data.mix import MixConfig, mix_images, mixed_targets
from hwr.engine import runtime
from hwr.losses import Loss, Scheduled
from hwr.models import Model
from hwr.random import Key
from hwr.tree import PyTree

Transform = Callable[[Key, torch.Tensor], torch.Tensor]
Metrics = dict[str, torch.Tensor]

__all__ = [
    "Bound",
    "Callback",
    "EarlyStopping",
    "NonFiniteLoss",
    "Objective",
    "TrainState",
    "classifier",
    "compile",
    "eval_step",
    "fit",
    "hyper_step",
    "init_state",
    "predict",
    "train_step",
]

Parts = Callable[[PyTree], tuple[optim.GradientTransformation, "Objective"]]  # hp -> what a hyper_step builds
HyperStep = Callable[["TrainState", Any, PyTree], tuple["TrainState", Metrics]]


class TrainState(NamedTuple):
    """Everything a step reads and writes. ``step`` is an int64 0-d tensor (a tensor, so it never recompiles)."""

    params: PyTree
    model_state: PyTree
    opt_state: Any
    key: Key
    step: torch.Tensor


def init_state(
    model: Model,
    optimizer: optim.GradientTransformation,
    key: Key,
    *,
    params: PyTree | None = None,
    model_state: PyTree | None = None,
) -> TrainState:
    """A fresh state on ``key``'s device: params from ``model.init`` (or given, for fine-tuning), optimizer
    state, step 0."""
    k_init, k_train = random.split(key)
    params = model.init(k_init) if params is None else params
    model_state = model.init_state(device=key.device) if model_state is None else model_state
    step = torch.zeros((), dtype=torch.int64, device=key.device)
    return TrainState(params, model_state, optimizer.init(params), k_train, step)


def _check_batch(batch: Batch) -> None:
    if not isinstance(batch, Batch):
        raise TypeError(f"a step takes hwr.data.batches.Batch(images, labels, mask), got {type(batch).__name__}")
    b = batch.images.shape[0]
    if batch.labels.shape != (b,) or batch.mask.shape != (b,):
        raise ValueError(
            f"batch shapes disagree: images {tuple(batch.images.shape)}, labels {tuple(batch.labels.shape)}, "
            f"mask {tuple(batch.mask.shape)}; labels and mask must be (B,) with B = images.shape[0]"
        )
    if batch.labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64 class indices, got {batch.labels.dtype}; use labels.long()")


class Objective(NamedTuple):
    """What a task adds to the one train step. ``inputs(batch, k_augment, k_mix) -> (x, aux)``: the model's input
    from a batch (augmentation, normalisation, mixing; ``aux`` is whatever the loss needs besides the batch);
    ``loss(logits, batch, aux, step) -> scalar``: the mean loss that is differentiated; ``correct(logits, batch)
    -> (B,) bool``: the samples counted right in the metrics. A batch is any NamedTuple with ``images`` and a
    ``(B,)`` bool ``mask`` (False: padding)."""

    inputs: Callable[[Any, Key, Key], tuple[torch.Tensor, Any]]
    loss: Callable[[torch.Tensor, Any, Any, torch.Tensor], torch.Tensor]
    correct: Callable[[torch.Tensor, Any], torch.Tensor]


def classifier(
    loss: Loss, *, transform: Transform = to_float, mix: MixConfig | None = None, mix_hp: PyTree | None = None
) -> Objective:
    """The classifier objective over a ``Batch``: ``transform`` (augment, normalise) the images, ``mix`` them per
    sample (mixup / CutMix: the loss then sees soft targets, and ``correct`` counts the sample's own label; its
    alphas and share from ``mix_hp``, ``hwr.data.mix.hyperparameters``, when given), and ``loss(logits, targets,
    mask)`` (a ``losses.Scheduled`` loss also receives the step)."""
    mixing = mix is not None and not mix.is_identity()
    scheduled = isinstance(loss, Scheduled)

    def inputs(batch: Batch, k_augment: Key, k_mix: Key) -> tuple[torch.Tensor, Any]:
        _check_batch(batch)
        x = transform(k_augment, batch.images)  # (B, C, H, W) float
        if not mixing:
            return x, None
        x, perm, lam = mix_images(k_mix, x, mix, mix_hp)
        return x, (perm, lam)

    def objective_loss(logits: torch.Tensor, batch: Batch, aux: Any, step: torch.Tensor) -> torch.Tensor:
        target = mixed_targets(batch.labels, *aux, logits.shape[-1]) if mixing else batch.labels
        return loss(logits, target, batch.mask, *((step,) if scheduled else ()))

    return Objective(inputs, objective_loss, lambda logits, batch: logits.argmax(-1) == batch.labels)


def train_step(
    model: Model,
    optimizer: optim.GradientTransformation,
    objective: Objective | Loss,
    *,
    transform: Transform = to_float,
    mix: MixConfig | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, Metrics]]:
    """Build the pure step ``(state, batch) -> (state, metrics)`` of a task's ``objective``; a plain loss
    ``(logits, labels, mask) -> scalar`` is the classifier objective ``classifier(loss, transform=, mix=)``.

    The step derives its keys from ``fold_in(state.key, state.step)`` (augmentation, the model's dropout,
    mixing), takes ``torch.func.grad_and_value`` of the objective's loss and applies the optimizer. ``metrics``
    are sums over the unmasked samples (``loss_sum``, ``correct``, ``count``) plus ``loss`` (the batch mean that
    was differentiated) and ``grad_norm``, so an epoch's figures are sums divided once.
    """
    if not isinstance(objective, Objective):
        objective = classifier(objective, transform=transform, mix=mix)
    elif transform is not to_float or mix is not None:
        raise ValueError("transform= and mix= belong to a plain loss; an Objective carries its own inputs")

    def step(state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        k_aug, k_model, k_mix = random.split(random.fold_in(state.key, state.step), 3)
        x, aux = objective.inputs(batch, k_aug, k_mix)

        def value_of(params: PyTree) -> tuple[torch.Tensor, tuple[torch.Tensor, PyTree]]:
            logits, model_state = model.apply(params, state.model_state, x, key=k_model, train=True)
            return objective.loss(logits, batch, aux, state.step), (logits, model_state)

        grads, (value, (logits, model_state)) = grad_and_value(value_of, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optim.apply_updates(state.params, updates)
        mask = batch.mask
        count = mask.sum()
        metrics = {
            "loss": value.detach(),
            "loss_sum": value.detach() * count,
            "correct": (objective.correct(logits.detach(), batch) & mask).sum(),
            "count": count,
            "grad_norm": tree.global_norm(grads),
        }
        return TrainState(params, model_state, opt_state, state.key, state.step + 1), metrics

    return step


def hyper_step(model: Model, parts: Parts) -> HyperStep:
    """The pure step ``(state, batch, hp) -> (state, metrics)`` whose optimizer and objective are
    ``parts(hp)``, built inside the step from ``hp``, a pytree of tensors (0-d learning rate, weight decay, tau,
    mixing alpha, augmentation magnitudes, a schedule's length ...). ``parts`` decides only what is built (the
    choices a config makes); every value it reads from ``hp`` is an input of the step, so one compiled step
    serves every value (a study's trials of one structure) and a new value never recompiles."""

    def step(state: TrainState, batch: Any, hp: PyTree) -> tuple[TrainState, Metrics]:
        optimizer, objective = parts(hp)
        return train_step(model, optimizer, objective)(state, batch)

    return step


class Bound(NamedTuple):
    """``step(state, batch)`` of a ``hyper_step`` (eager or compiled: ``core``) with its values ``hp`` bound."""

    core: HyperStep
    hp: PyTree

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        return self.core(state, batch, self.hp)


def eval_step(
    model: Model,
    num_classes: int,
    *,
    transform: Transform = to_float,
) -> Callable[[PyTree, PyTree, Batch], Metrics]:
    """Build ``(params, model_state, batch) -> sums``: ``loss_sum``, ``correct``, ``count`` and the
    ``confusion`` matrix (rows true, columns predicted) over unmasked samples. Sum over batches, divide once."""

    def step(params: PyTree, model_state: PyTree, batch: Batch) -> Metrics:
        _check_batch(batch)
        x = transform(random.key(0, device=batch.labels.device), batch.images)
        logits, _ = model.apply(params, model_state, x, train=False)
        m = batch.mask.to(torch.float32)
        nll = F.cross_entropy(logits.float(), batch.labels, reduction="none")
        pred = logits.argmax(-1)
        truth = F.one_hot(batch.labels, num_classes).float() * m[:, None]  # (B, C)
        confusion = truth.T @ F.one_hot(pred, num_classes).float()  # (C, C)
        return {
            "loss_sum": (nll * m).sum(),
            "correct": ((pred == batch.labels) & batch.mask).sum(),
            "count": batch.mask.sum(),
            "confusion": confusion.round().long(),
        }

    return step


def predict(
    model: Model,
    params: PyTree,
    model_state: PyTree,
    images: torch.Tensor,
    *,
    batch_size: int = 512,
    transform: Transform = to_float,
) -> torch.Tensor:
    """Logits ``(N, classes)`` for ``images`` ``(N, C, H, W)`` in inference mode, batch by batch."""
    k = random.key(0, device=images.device)
    outs = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            x = transform(k, images[i : i + batch_size])
            outs.append(model.apply(params, model_state, x, train=False)[0])
    return torch.cat(outs) if outs else torch.empty(0)


CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that replay CUDA graphs on a GPU


def compile(fn: Callable, *, dynamic: bool = False, mode: str | None = None, **options: Any) -> Callable:
    """``torch.compile(fn, fullgraph=True)`` with the settings that work here: static shapes (pad the last
    batch instead); later processes warm-start from the shared inductor cache that ``runtime.configure`` sets at
    process start (about 14 s cold, 2 s warm). It writes no environment variable.

    ``options`` are inductor options (``hwr.engine.perf.ATEN_GRAPH``); ``mode`` a ``torch.compile`` mode instead.
    ``mode="reduce-overhead"`` replays the step as one CUDA graph on a GPU; a replay reuses the memory of the
    previous one's outputs, so this returns copies of them (a copy of the state per step) to keep the step pure.
    ``hwr.engine.autotune.compile_step`` picks among such configurations by timing them."""
    if mode is not None and options:
        raise ValueError(
            f"compile takes a mode or inductor options, not both: mode={mode!r}, options {sorted(options)}"
        )
    runtime.quiet_cuda_home_warning()  # inductor's C++ builds log it on every CPU-only machine
    compiled = torch.compile(fn, fullgraph=True, dynamic=dynamic, mode=mode, options=options or None)
    if mode not in CUDAGRAPH_MODES:
        return compiled

    @functools.wraps(fn)
    def owned(*args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        return tree.map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, compiled(*args, **kwargs))

    return owned


# ---------------------------------------------------------------------------------------------- fit loop


class NonFiniteLoss(FloatingPointError):
    """Raised by ``fit`` when a step's loss is NaN or infinite; the state before that step is attached."""

    def __init__(self, epoch: int, step: int, state: TrainState, what: str = "loss") -> None:
        super().__init__(
            f"{what} became non-finite at epoch {epoch}, step {step}; lower the learning rate or add "
            "clip_by_global_norm (the last good checkpoint is kept)"
        )
        self.epoch, self.step, self.state = epoch, step, state


class Callback:
    """Hooks of the fit loop; override what you need. ``on_epoch_end`` returns True to stop training.

    ``on_step`` runs every ``sync_every`` steps and once more at the end of the epoch (never per step: that
    would need a host sync per step) with host floats over the steps since its last call: ``loss`` (their mean
    loss per sample), ``count`` (samples) and ``steps``."""

    def on_build(self, compile: bool) -> None:
        """Called by a task's ``run`` just before it builds the step (``compile``: a compile, tens of seconds)."""

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:  # -1: unknown
        pass

    def on_dispatch(self, epoch: int) -> None:
        """Called after each step is queued (no host sync: the loss is not known yet), e.g. to move a bar."""

    def on_step(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, epoch: int, state: TrainState, record: dict[str, Any]) -> bool | None:
        pass


class EarlyStopping(Callback):
    """Stop when ``record[monitor]`` has not improved for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_macro_f1", patience: int = 3, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.patience, self.sign = monitor, patience, 1.0 if mode == "max" else -1.0
        self.best, self.bad = -math.inf, 0

    def on_epoch_end(self, epoch: int, state: TrainState, record: dict[str, Any]) -> bool:
        if self.monitor not in record:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, but the epoch record has {sorted(record)}")
        value = self.sign * float(record[self.monitor])
        if value > self.best:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.bad >= self.patience


def fit(
    state: TrainState,
    step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
    batches: Callable[[int], Iterable[Batch]],
    *,
    epochs: int,
    evaluate: Callable[[TrainState], dict[str, Any]] | None = None,
    callbacks: Sequence[Callback] = (),
    start_epoch: int = 0,
    sync_every: int = 50,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Run epochs ``start_epoch .. epochs-1``: ``batches(epoch)`` yields that epoch's batches (keyed by the
    epoch, so a resumed run sees the same batches), ``evaluate(state)`` returns validation figures.

    Returns the final state and one record per epoch run (train loss and accuracy, evaluation figures).
    Raises ``NonFiniteLoss`` with the last good state if the loss turns NaN; callbacks may raise to stop
    (a pruned Optuna trial) or return True from ``on_epoch_end`` to end early.

    Host syncs: metric sums stay on the step's device; the loop reads them back (one transfer) every
    ``sync_every`` steps and at the end of each epoch, and synchronises the device once per epoch for the
    timing, so an epoch costs ``ceil(steps / sync_every)`` transfers whatever the step count. The trade: a
    non-finite loss is seen up to ``sync_every - 1`` steps late. The state of the last check is kept, and on
    a failed check the loop replays the steps since then one at a time (a host sync each, on this failure path
    only) to find the first non-finite step, so ``NonFiniteLoss`` carries the state just before it, as a
    per-step check would. Were the replay not to reproduce the failure (a non-deterministic kernel), the last
    checked state is the one carried: up to ``sync_every - 1`` finite steps after it are then discarded.
    ``on_epoch_end`` (checkpoints) only ever sees checked, finite states.
    """
    if sync_every < 1:
        raise ValueError(f"sync_every must be >= 1 step, got {sync_every}")
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch, epochs):
        epoch_batches = batches(epoch)
        n = len(epoch_batches) if hasattr(epoch_batches, "__len__") else -1
        for cb in callbacks:
            cb.on_epoch_start(epoch, n)
        t0 = time.perf_counter()
        state, sums = _run_epoch(state, step, epoch_batches, epoch, sync_every, callbacks)
        seen = max(sums["count"], 1.0)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": int(sums["step"]),
            "train_loss": sums["loss_sum"] / seen,
            "train_accuracy": sums["correct"] / seen,
            "train_seconds": (seconds := time.perf_counter() - t0),
            "samples_per_s": sums["count"] / max(seconds, 1e-9),
        }
        if evaluate is not None:
            record.update(evaluate(state))
        history.append(record)
        stop = [cb.on_epoch_end(epoch, state, record) for cb in callbacks]
        if any(stop):
            break
    return state, history


_SUMS = ("loss_sum", "correct", "count", "loss")  # summed on the device; "loss" is summed to test finiteness


def _probe(m: Metrics) -> torch.Tensor:
    """The step's loss, made NaN where its gradient norm is not finite (``0 * inf`` is NaN): a finite loss whose
    gradient is NaN writes NaN parameters, which the fit loop must not check in or save."""
    return m["loss"] + 0.0 * m["grad_norm"].to(m["loss"].dtype) if "grad_norm" in m else m["loss"]


def _bad(m: Metrics) -> str | None:
    """What in a step's metrics is not finite (``"loss"``, ``"gradient"``), or None: the replay's host check."""
    if not math.isfinite(float(m["loss"])):
        return "loss"
    return "gradient" if "grad_norm" in m and not math.isfinite(float(m["grad_norm"])) else None


def _run_epoch(
    state: TrainState,
    step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
    epoch_batches: Iterable[Batch],
    epoch: int,
    sync_every: int,
    callbacks: Sequence[Callback],
) -> tuple[TrainState, dict[str, float]]:
    """One epoch: the state after it (checked finite) and its sums on the host (plus ``step``). The device is
    synchronised before returning, so the caller's clock sees the epoch's work done."""
    totals: torch.Tensor | None = None  # on the metrics' device
    sync = _Sync(state, step, epoch, callbacks)
    for batch in epoch_batches:
        state, m = step(state, batch)
        stacked = torch.stack([m[k] if k != "loss" else _probe(m) for k in _SUMS])
        totals = stacked.to(_sum_dtype(stacked.device)) if totals is None else totals + stacked  # no sync
        sync.window.append(batch)
        for cb in callbacks:
            cb.on_dispatch(epoch)
        if len(sync.window) == sync_every:
            sync.check(state, totals)
    if totals is None:  # an empty epoch
        sync.host = {**dict.fromkeys(_SUMS, 0.0), "step": float(state.step)}
        return state, sync.host
    if sync.window:  # the epoch's tail
        sync.check(state, totals)
    runtime.synchronize(totals.device)
    return state, sync.host


class _Sync:
    """The fit loop's host side of one epoch: the last checked state, the batches since, the sums read back."""

    def __init__(self, state: TrainState, step: Callable, epoch: int, callbacks: Sequence[Callback]) -> None:
        self.checked, self.step, self.epoch, self.callbacks = state, step, epoch, callbacks
        self.window: list[Batch] = []
        self.host: dict[str, float] = {}

    def check(self, state: TrainState, totals: torch.Tensor) -> None:
        """Read ``totals`` and ``state.step`` back (one transfer); raise ``NonFiniteLoss`` if a loss (or its
        gradient) since the last check was non-finite, else report the window's progress and make ``state`` the
        checked one."""
        now = dict(zip((*_SUMS, "step"), torch.cat([totals, state.step.reshape(1).to(totals)]).tolist()))
        if not math.isfinite(now["loss"]):
            self._replay()
        count = now["count"] - self.host.get("count", 0.0)
        loss = (now["loss_sum"] - self.host.get("loss_sum", 0.0)) / max(count, 1.0)
        for cb in self.callbacks:
            cb.on_step(self.epoch, {"loss": loss, "count": count, "steps": len(self.window)})
        self.checked, self.window, self.host = state, [], now

    def _replay(self) -> None:
        """Rerun the window from the checked state one step at a time (a sync each: the failure path only) and
        raise ``NonFiniteLoss`` with the state before the first non-finite loss (the checked one if none)."""
        state = self.checked
        for batch in self.window:
            new, m = self.step(state, batch)
            what = _bad(m)
            if what:
                raise NonFiniteLoss(self.epoch, int(state.step), state, what)
            state = new
        raise NonFiniteLoss(self.epoch, int(self.checked.step), self.checked)


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
