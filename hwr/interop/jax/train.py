"""Training in JAX from an hwr state and back: hwr's pure train step written for the JAX twins and optax.

``train_step(config, optimizer)`` is ``hwr.engine.train.train_step(model, optimizer, losses.cross_entropy)`` in JAX: the
same per-step keys (``fold_in(key, step)`` split into augmentation and model keys, in ``jax_random``), the same
uint8-to-float transform, masked mean cross-entropy, the batch stats threaded through. ``jax.jit`` it (with
``donate_argnums=0`` if the old state is not reused).

``from_hwr_state`` starts it from an hwr ``TrainState`` (a fresh optax state); ``to_hwr_state`` brings the result
back, Adam's moments included when the optax state holds a ``ScaleByAdamState``, so hwr continues where JAX stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import torch

from hwr import optim
from hwr.engine import train
from hwr.interop.jax import families as fam
from hwr.interop.jax import random as jax_random

__all__ = ["JaxTrainState", "adam_state_from_optax", "from_hwr_state", "to_hwr_state", "train_step"]


class JaxTrainState(NamedTuple):
    """``hwr.engine.train.TrainState`` in JAX: Flax-layout params and batch stats, an optax state, an hwr key
    (``uint32 (2,)``) and an int32 step."""

    params: Any
    model_state: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


def from_hwr_state(state: train.TrainState, config: Any, optimizer: Any) -> JaxTrainState:
    """An hwr ``TrainState`` as a ``JaxTrainState`` for ``optimizer`` (an optax transformation); the optax state
    is fresh (``optimizer.init``): start from an initial hwr state, or accept restarting the optimizer."""
    params = jax.tree_util.tree_map(jnp.array, fam.to_flax(state.params, config))  # own copies: jit may donate
    stats = jax.tree_util.tree_map(jnp.array, fam.stats_to_flax(state.model_state))
    return JaxTrainState(
        params, stats, optimizer.init(params), jax_random.from_hwr(state.key), jnp.asarray(int(state.step), jnp.int32)
    )


def adam_state_from_optax(opt_state: Any, config: Any) -> tuple[optim.AdamState, optim.CountState]:
    """The ``ScaleByAdamState`` inside an optax state (``optax.adam``'s, or a chain holding one) as the state of
    ``hwr.optim.adam`` (moments in hwr layouts, int64 counts)."""
    import optax

    found = [
        s
        for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"expected one optax ScaleByAdamState in the optimizer state, found {len(found)}; "
            "only optax.adam's state (or a chain with one Adam) converts to hwr.optim.adam's"
        )
    adam = found[0]
    count = torch.tensor(int(adam.count), dtype=torch.int64)
    mu, nu = fam.from_flax(adam.mu, config), fam.from_flax(adam.nu, config)
    return optim.AdamState(count, mu, nu), optim.CountState(count.clone())


def to_hwr_state(state: JaxTrainState, config: Any, *, opt_state: Any = None) -> train.TrainState:
    """A ``JaxTrainState`` back as an hwr ``TrainState``; the optimizer state is ``opt_state`` if given, else
    ``adam_state_from_optax(state.opt_state, config)`` (for ``hwr.optim.adam``)."""
    params = fam.from_flax(state.params, config)
    if opt_state is None:
        opt_state = adam_state_from_optax(state.opt_state, config)
    return train.TrainState(
        params,
        fam.stats_from_flax(state.model_state, config),
        opt_state,
        jax_random.to_hwr(state.key),
        torch.tensor(int(state.step), dtype=torch.int64),
    )


def _cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """``hwr.losses.cross_entropy`` without class weights or smoothing: the mean over unmasked samples."""
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=1)[:, 0]  # (B,)
    m = mask.astype(nll.dtype)
    return (nll * m).sum() / jnp.maximum(m.sum(), 1e-12)


def train_step(
    config: Any, optimizer: Any, *, precision: jax.lax.PrecisionLike = None
) -> Callable[..., tuple[JaxTrainState, dict[str, jax.Array]]]:
    """The pure step ``(state, images, labels, mask=None) -> (state, metrics)`` for ``config``'s family:
    ``images`` uint8 (or float) NHWC ``(B, H, W, C)``, ``labels`` int ``(B,)``, ``mask`` bool ``(B,)``.
    ``metrics``: ``loss`` (the mean that was differentiated), ``correct`` and ``count`` over unmasked samples."""
    import optax

    twin = fam.family_of(config)

    def step(
        state: JaxTrainState, images: jax.Array, labels: jax.Array, mask: jax.Array | None = None
    ) -> tuple[JaxTrainState, dict[str, jax.Array]]:
        mask = jnp.ones(labels.shape, bool) if mask is None else mask
        _k_aug, k_model = jax_random.split(jax_random.fold_in(state.key, state.step))
        x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images

        def objective(p: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            logits, stats = twin.forward(p, state.model_state, x, config, key=k_model, train=True, precision=precision)
            if logits.ndim != 2:
                raise ValueError(
                    f"train_step trains classifiers (logits (B, classes)); {twin.name} gives logits "
                    f"{logits.shape}: train it with its own loss (CTC for crnn)"
                )
            return _cross_entropy(logits, labels, mask), (logits, stats)

        (loss, (logits, stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "correct": ((logits.argmax(-1) == labels) & mask).sum(), "count": mask.sum()}
        return JaxTrainState(params, stats, opt_state, state.key, state.step + 1), metrics

    return step
