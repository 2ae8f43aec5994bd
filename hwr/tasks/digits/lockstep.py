"""K digit runs of one structure trained in lockstep: one vmapped step advances all of them
(``hwr.engine.execution.stacked_step``), each with its own seed (initial parameters, keys, batch order) and its own
continuous values (learning rate, weight decay, tau, augmentation magnitudes, mixing ...: ``training.tuned``).

``train_lockstep(configs)`` prepares each config as ``run`` does (``preparation.prepare``), stacks the K initial
states and value pytrees, feeds step i of every trial's own epoch (``training.make_batches``) as one stacked batch,
and at the end applies each config's post-training (``training.post_train``) and measures its validation split
(``training.evaluate``): the final parameters and validation figures ``run`` reaches for the same config, up to
float rounding (vmapped convolutions sum in another order). It writes no run folder, reads no test image and
validates after the last epoch only. A trial whose loss turns non-finite does not stop the others: its figures are
NaN in its ``history``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from hwr import random, tree
from hwr.config import DataSettings
from hwr.engine import execution as ex
from hwr.engine import stacked, train
from hwr.engine.execution import Execution
from hwr.tasks.digits import training
from hwr.tasks.digits.config import RunConfig
from hwr.tasks.digits.preparation import Prepared, prepare

__all__ = ["Trial", "train_lockstep"]

_SUMS = ("loss_sum", "correct", "count")


class Trial(NamedTuple):
    """One config's result: its final parameters and model state (after post-training), its validation summary
    (``training.evaluate``; cross-fitted for WiSE-FT, as ``run``), per-epoch training figures and post-training's
    record."""

    config: RunConfig
    params: Any
    model_state: Any
    val: dict[str, Any]
    history: list[dict[str, float]]
    post_training: dict[str, Any]


def _one_group(configs: Sequence[RunConfig], prepared: Sequence[Prepared], tuned: Sequence[ex.Tuned]) -> None:
    """Raise ``ValueError`` naming the fix unless every config builds the same step for the same number of steps:
    one ``training.structure``, one ``epochs``, one count of batches per epoch."""
    first = json.loads(tuned[0].structure)
    for i, (c, p, t) in enumerate(zip(configs, prepared, tuned, strict=True)):
        other = json.loads(t.structure)
        differ = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if c.epochs != configs[0].epochs:
            differ.append("epochs")
        if p.steps_per_epoch != prepared[0].steps_per_epoch:
            differ.append("steps per epoch (training images)")
        if differ:
            raise ValueError(
                f"config {i} differs from config 0 in {differ}: configs trained in lockstep share one step, so "
                "they may differ only in continuous values (learning rate, weight decay, tau, augmentation and "
                "mixing magnitudes ...) and seed; group them by hwr.tasks.digits.training.structure and train "
                "each group apart (or each config with hwr.tasks.digits.run)"
            )


def _epoch(
    step: stacked.StackedStep, states: train.TrainState, hps: Any, batches: Sequence[list[Any]]
) -> tuple[train.TrainState, torch.Tensor]:
    """One epoch of every trial: step i takes batch i of each trial's own epoch. Returns the states after it and
    the ``(len(_SUMS), K)`` sums of the step metrics, kept on the device."""
    totals = None
    for group in zip(*batches, strict=True):
        states, m = step(states, tree.stack(group), hps)
        sums = torch.stack([m[k].to(torch.float64) for k in _SUMS])
        totals = sums if totals is None else totals + sums
    if totals is None:
        raise ValueError("an epoch without a batch: lower batch_size or train on more images")
    return states, totals


def _finish(
    config: RunConfig, execution: Execution, p: Prepared, state: train.TrainState, history: list[dict[str, float]]
) -> Trial:
    """``run``'s end for one trial: post-training, then the validation summary (the honest one of WiSE-FT)."""
    params, post, honest = training.post_train(config, execution, p, state, random.fold_in(p.keys.data, -1))
    val = honest
    if val is None:
        val = training.evaluate(p.model, params, state.model_state, *p.val, len(p.classes), mean=p.mean, std=p.std)
    return Trial(config, params, state.model_state, val, history, post)


def train_lockstep(
    configs: Sequence[RunConfig], *, execution: Execution | None = None, data: DataSettings | None = None
) -> tuple[list[Trial], dict[str, Any]]:
    """Train ``configs`` (K >= 1 of one structure: ``ValueError`` otherwise) in lockstep under ``execution``
    (default ``Execution()``, as ``run``): one vmapped step per batch for all K, eager or compiled
    (``hwr.engine.execution.stacked_step``). Returns one ``Trial`` per config, in order, and the record of how
    the step was built. ``data`` says where data sets live, as for ``run``."""
    if not configs:
        raise ValueError("train_lockstep needs at least one RunConfig")
    execution = execution or Execution()
    device = execution.resolve()
    execution.configure(device)
    prepared = [prepare(c, data, device=device) for c in configs]
    tuned = [training.tuned(c, p) for c, p in zip(configs, prepared, strict=True)]
    _one_group(configs, prepared, tuned)
    loaders = [training.make_batches(c, p, p.keys.data) for c, p in zip(configs, prepared, strict=True)]
    states, first, hps = stacked.stack_trials(
        [
            train.init_state(p.model, p.optimizer, p.keys.train, params=p.params, model_state=p.model_state)
            for p in prepared
        ],
        [load(0)[0] for load in loaders],
        [t.hp for t in tuned],
    )
    step, built = ex.stacked_step(execution, prepared[0].model, tuned[0], states, first, hps)
    histories: list[list[dict[str, float]]] = [[] for _ in configs]
    for epoch in range(configs[0].epochs):
        states, totals = _epoch(step, states, hps, [load(epoch) for load in loaders])
        for history, (loss_sum, correct, count) in zip(histories, totals.T.tolist(), strict=True):
            seen = max(count, 1.0)
            history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen})
    trials = [
        _finish(c, execution, p, s, h)
        for c, p, s, h in zip(configs, prepared, tree.unstack(states), histories, strict=True)
    ]
    return trials, built
