"""The training step as one pure function, its evaluation twin, the compile helper and the fit loop.

``train_step(model, optimizer, loss)`` returns ``step(state, batch) -> (state, metrics)``: it derives this
step's key from ``fold_in(state.key, state.step)``, transforms the batch (augment, normalise), takes
``torch.func.grad_and_value`` of the loss, applies the optimizer and returns a new ``TrainState``. Nothing is
modified in place, so the same function runs eagerly, under ``torch.compile(fullgraph=True)`` or ``vmap``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.func import grad_and_value

from hwr import optim, random, runtime, tree
from hwr.data.batches import Batch, to_float
from hwr.losses import Loss
from hwr.models import Model
from hwr.random import Key
from hwr.tree import PyTree

Transform = Callable[[Key, torch.Tensor], torch.Tensor]
Metrics = dict[str, torch.Tensor]

__all__ = [
    "Batch",
    "Callback",
    "EarlyStopping",
    "NonFiniteLoss",
    "TrainState",
    "compile",
    "eval_step",
    "fit",
    "init_state",
    "predict",
    "to_float",
    "train_step",
]


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
    """A fresh state: params from ``model.init`` (or given, for fine-tuning), optimizer state, step 0."""
    k_init, k_train = random.split(key)
    params = model.init(k_init) if params is None else params
    model_state = model.init_state() if model_state is None else model_state
    step = torch.zeros((), dtype=torch.int64, device=key.device)
    return TrainState(params, model_state, optimizer.init(params), k_train, step)


def _check_batch(batch: Batch) -> None:
    if not isinstance(batch, Batch):
        raise TypeError(f"a step takes hwr.train.Batch(images, labels, mask), got {type(batch).__name__}")
    b = batch.images.shape[0]
    if batch.labels.shape != (b,) or batch.mask.shape != (b,):
        raise ValueError(
            f"batch shapes disagree: images {tuple(batch.images.shape)}, labels {tuple(batch.labels.shape)}, "
            f"mask {tuple(batch.mask.shape)}; labels and mask must be (B,) with B = images.shape[0]"
        )
    if batch.labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64 class indices, got {batch.labels.dtype}; use labels.long()")


def train_step(
    model: Model,
    optimizer: optim.GradientTransformation,
    loss: Loss,
    *,
    transform: Transform = to_float,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build the pure step ``(state, batch) -> (state, metrics)``.

    ``metrics`` are sums over the unmasked samples (``loss_sum``, ``correct``, ``count``) plus ``loss`` (the
    batch mean that was differentiated) and ``grad_norm``, so an epoch's figures are sums divided once.
    """

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        _check_batch(batch)
        k_aug, k_model = random.split(random.fold_in(state.key, state.step))
        x = transform(k_aug, batch.images)  # (B, C, H, W) float

        def objective(params: PyTree) -> tuple[torch.Tensor, tuple[torch.Tensor, PyTree]]:
            logits, model_state = model.apply(params, state.model_state, x, key=k_model, train=True)
            return loss(logits, batch.labels, batch.mask), (logits, model_state)

        grads, (value, (logits, model_state)) = grad_and_value(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optim.apply_updates(state.params, updates)
        mask = batch.mask
        count = mask.sum()
        metrics = {
            "loss": value.detach(),
            "loss_sum": value.detach() * count,
            "correct": ((logits.argmax(-1) == batch.labels) & mask).sum(),
            "count": count,
            "grad_norm": tree.global_norm(grads),
        }
        return TrainState(params, model_state, opt_state, state.key, state.step + 1), metrics

    return step


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


def compile(fn: Callable, *, dynamic: bool = False, **options: Any) -> Callable:
    """``torch.compile(fn, fullgraph=True)`` with the settings that work here: static shapes (pad the last
    batch instead), and a shared inductor cache so later processes warm-start (about 14 s cold, 2 s warm)."""
    runtime.inductor_cache_dir()
    return torch.compile(fn, fullgraph=True, dynamic=dynamic, options=options or None)


# ---------------------------------------------------------------------------------------------- fit loop


class NonFiniteLoss(FloatingPointError):
    """Raised by ``fit`` when a step's loss is NaN or infinite; the state before that step is attached."""

    def __init__(self, epoch: int, step: int, state: TrainState) -> None:
        super().__init__(
            f"loss became non-finite at epoch {epoch}, step {step}; lower the learning rate or add "
            "clip_by_global_norm (the last good checkpoint is kept)"
        )
        self.epoch, self.step, self.state = epoch, step, state


class Callback:
    """Hooks of the fit loop; override what you need. ``on_epoch_end`` returns True to stop training."""

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:  # -1: unknown
        pass

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
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Run epochs ``start_epoch .. epochs-1``: ``batches(epoch)`` yields that epoch's batches (keyed by the
    epoch, so a resumed run sees the same batches), ``evaluate(state)`` returns validation figures.

    Returns the final state and one record per epoch run (train loss and accuracy, evaluation figures).
    Raises ``NonFiniteLoss`` with the last good state if the loss turns NaN; callbacks may raise to stop
    (a pruned Optuna trial) or return True from ``on_epoch_end`` to end early.
    """
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch, epochs):
        epoch_batches = batches(epoch)
        n = len(epoch_batches) if hasattr(epoch_batches, "__len__") else -1
        for cb in callbacks:
            cb.on_epoch_start(epoch, n)
        sums: dict[str, float] = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        t0 = time.perf_counter()
        for batch in epoch_batches:
            new_state, m = step(state, batch)
            loss = float(m["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLoss(epoch, int(state.step), state)
            state = new_state
            for k in sums:
                sums[k] += float(m[k])
            for cb in callbacks:
                cb.on_step(epoch, {"loss": loss, "count": float(m["count"])})
        seen = max(sums["count"], 1.0)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": int(state.step),
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
