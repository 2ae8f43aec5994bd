"""K trials of one structure in one step: their states, batches and values stacked along a new leading axis and
the ``hyper_step`` mapped over it with ``torch.func.vmap``.

``stack_trials(states, batches, hps)`` stacks K of each (``hwr.tree.stack``); ``vmapped(core)`` turns a
``hwr.engine.train.hyper_step`` into ``(states, batches, hps) -> (states, metrics)`` over stacked inputs: every
trial keeps its own parameters, key, data order and values (in_dims 0 for every tensor), and the metrics come
back as ``(K,)`` tensors. ``hwr.tree.unstack`` gives the K results back. Trials of different structure (another
model shape, another batch size, a lever switched on in one only) cannot share a step: stacking refuses them.
The step is still pure, so it runs eagerly or under ``torch.compile(fullgraph=True)``
(``hwr.engine.execution.stacked_step`` builds it from an ``Execution``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from hwr import tree
from hwr.engine import train
from hwr.tree import PyTree

__all__ = ["StackedStep", "stack_trials", "trials_of", "vmapped"]

StackedStep = Callable[[train.TrainState, Any, PyTree], tuple[train.TrainState, train.Metrics]]

_GROUP = "group the trials by structure and give each group its own step"


def stack_trials(
    states: Sequence[train.TrainState], batches: Sequence[Any], hps: Sequence[PyTree]
) -> tuple[train.TrainState, Any, PyTree]:
    """K states, batches and values (``hp`` pytrees) stacked along a new leading axis, trial k at index k.
    Raises ``ValueError`` naming the fix when the three hold different numbers of trials or when the trials'
    pytrees differ in structure or leaf shapes (trials of different structure cannot share one step)."""
    ks = {"states": len(states), "batches": len(batches), "hps": len(hps)}
    if len(set(ks.values())) != 1 or not len(states):
        raise ValueError(f"stack one state, one batch and one hp per trial, K >= 1 of each; got {ks}")
    stacked = []
    for what, trees in (("states", states), ("batches", batches), ("hps", hps)):
        try:
            stacked.append(tree.stack(trees))
        except ValueError as e:
            raise ValueError(
                f"trials of different structure cannot share one vmapped step ({what}: {e}); {_GROUP}"
            ) from e
    return stacked[0], stacked[1], stacked[2]


def trials_of(stacked: PyTree) -> int:
    """K, the leading size every tensor leaf of ``stacked`` shares; ``ValueError`` naming the fix otherwise."""
    sizes = {x.shape[0] if x.dim() else 0 for x in tree.leaves(stacked) if isinstance(x, torch.Tensor)}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"expected pytrees stacked along one leading axis of K trials, got leading sizes {sorted(sizes)} "
            "(0: a leaf with none); stack them with hwr.engine.stacked.stack_trials"
        )
    return sizes.pop()


def _in_dims(stacked: PyTree) -> PyTree:
    """``vmap``'s in_dims for ``stacked``: 0 for every tensor leaf, None for the rest (None, ints: shared)."""
    return tree.map(lambda x: 0 if isinstance(x, torch.Tensor) else None, stacked)


def vmapped(core: StackedStep) -> StackedStep:
    """``core`` (a ``hwr.engine.train.hyper_step``: ``(state, batch, hp) -> (state, metrics)``) over K trials at
    once: ``(states, batches, hps) -> (states, metrics)``, each input stacked along a leading axis of K
    (``stack_trials``) and mapped with ``torch.func.vmap`` (trial k reads only index k of each), each metric
    a ``(K,)`` tensor. Raises ``ValueError`` when the three inputs hold different numbers of trials."""

    def step(states: train.TrainState, batches: Any, hps: PyTree) -> tuple[train.TrainState, train.Metrics]:
        ks = {"states": trials_of(states), "batches": trials_of(batches), "hps": trials_of(hps)}
        if len(set(ks.values())) != 1:
            raise ValueError(f"states, batches and hps must stack the same K trials, got {ks}; stack_trials them")
        dims = (_in_dims(states), _in_dims(batches), _in_dims(hps))
        return torch.func.vmap(core, in_dims=dims, randomness="error")(states, batches, hps)

    return step
