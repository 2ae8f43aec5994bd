"""``hwr.random`` in JAX: the same counter-based hash on ``uint32`` words, so a JAX function draws the numbers hwr
draws for the same key (dropout masks in the JAX twins, per-step keys in a JAX training loop).

A key is a ``uint32`` array of shape ``(2,)`` (hwr's int64 ``(2,)`` key holds the same two words); these are not
``jax.random`` keys. ``uint32`` arithmetic wraps modulo 2**32, which is what hwr's masking after each multiply and
add computes in int64, so every function here equals its hwr namesake bit for bit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import torch

__all__ = ["bits", "fold_in", "from_hwr", "key", "split", "to_hwr", "uniform"]

_M1 = np.uint32(0x045D9F3B)
_GOLDEN = np.uint32(0x9E3779B9)
_SHIFT = np.uint32(16)


def _mix(x: jax.Array) -> jax.Array:
    x = ((x >> _SHIFT) ^ x) * _M1
    x = ((x >> _SHIFT) ^ x) * _M1
    return (x >> _SHIFT) ^ x


def _hash(counter: jax.Array, k: jax.Array) -> jax.Array:
    k0, k1 = k[0], k[1]
    x = _mix(counter ^ k0)
    x = _mix(x + k1 + _GOLDEN)
    return _mix(x ^ (k0 * np.uint32(7) + k1))


def from_hwr(k: torch.Tensor) -> jax.Array:
    """An hwr key (int64 ``(2,)`` tensor) as a JAX ``uint32`` key with the same two words."""
    return jnp.asarray(k.detach().cpu().numpy().astype(np.uint32))


def to_hwr(k: jax.Array) -> torch.Tensor:
    """Inverse of ``from_hwr``."""
    return torch.from_numpy(np.asarray(k).astype(np.int64))


def key(seed: int) -> jax.Array:
    """``hwr.random.key(seed)`` in JAX."""
    base = jnp.array([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=jnp.uint32)
    return _mix(_mix(base ^ jnp.array([0x12345678, 0x0BADBEEF], dtype=jnp.uint32)) ^ base[::-1])


def split(k: jax.Array, num: int = 2) -> jax.Array:
    """``hwr.random.split``: ``num`` keys, shape ``(num, 2)``."""
    counter = jnp.arange(2 * num, dtype=jnp.uint32) + np.uint32(0x5F3759DF)
    return _hash(counter, k).reshape(num, 2)


def fold_in(k: jax.Array, data: int | jax.Array) -> jax.Array:
    """``hwr.random.fold_in``: a key from ``k`` and an integer (a traced step counter is fine)."""
    d = jnp.asarray(data).astype(jnp.uint32)
    counter = jnp.stack([d * np.uint32(2), d * np.uint32(2) + np.uint32(1)])
    return _hash(_mix(counter ^ np.uint32(0x2545F491)), k)


def bits(k: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``hwr.random.bits``: uniform ``uint32`` words of ``shape``."""
    return _hash(jnp.arange(math.prod(shape), dtype=jnp.uint32), k).reshape(shape)


def uniform(k: jax.Array, shape: tuple[int, ...] = (), *, low: float = 0.0, high: float = 1.0) -> jax.Array:
    """``hwr.random.uniform`` (float32, 24 random mantissa bits)."""
    u = (bits(k, shape) >> np.uint32(8)).astype(jnp.float32) * np.float32(1.0 / (1 << 24))
    return low + (high - low) * u
