"""Explicit random keys in the JAX manner, built on integer hashing so they work inside compiled code.

A key is an int64 tensor of shape ``(2,)`` holding two 32-bit words. Every sampler is a pure function of
``(key, shape)``: no global RNG is read or written, the same key gives the same numbers in every process and
on every device, and the functions trace under ``torch.compile(fullgraph=True)`` (a ``torch.Generator`` cannot).

The generator is counter-based: sample ``i`` is ``hash(i, key)``, where ``hash`` is three rounds of a
32-bit integer mixer with both key words folded in. All arithmetic stays below 2**63, so int64 never
overflows (the constants are < 2**27 and values are masked to 32 bits after each multiply).

Devices: a key lives on a device (``key(seed, device=...)``) and everything derived from it (``split``,
``fold_in``, every sample) is created there; nothing is made on the host and copied.
"""

from __future__ import annotations

import math

import torch

Key = torch.Tensor

_MASK = 0xFFFFFFFF
_M1 = 0x045D9F3B
_GOLDEN = 0x9E3779B9

__all__ = [
    "Key",
    "bernoulli",
    "bits",
    "check_device",
    "fold_in",
    "key",
    "normal",
    "permutation",
    "randint",
    "split",
    "uniform",
]


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche mixer (two multiply-xorshift rounds) on int64 tensors holding uint32 values."""
    x = ((x >> 16) ^ x) * _M1 & _MASK
    x = ((x >> 16) ^ x) * _M1 & _MASK
    return (x >> 16) ^ x


def _hash(counter: torch.Tensor, k: Key) -> torch.Tensor:
    """uint32 hash of a counter tensor under key ``k``; values in ``[0, 2**32)`` as int64."""
    k0, k1 = k[0], k[1]
    x = _mix((counter & _MASK) ^ k0)
    x = _mix((x + k1 + _GOLDEN) & _MASK)
    return _mix(x ^ ((k0 * 7 + k1) & _MASK))


def _check_key(k: Key) -> None:
    if not isinstance(k, torch.Tensor) or k.dtype != torch.int64 or k.shape != (2,):
        got = f"{type(k).__name__} {getattr(k, 'dtype', '')} {tuple(getattr(k, 'shape', ()))}"
        raise TypeError(f"expected a key (int64 tensor of shape (2,)) from hwr.random.key(seed), got {got}")


def check_device(k: Key, x: torch.Tensor, where: str) -> None:
    """Raise unless key ``k`` lives on ``x``'s device: draws follow their key, so a key elsewhere would mix
    devices in ``where`` (a static check, free under ``torch.compile``)."""
    if k.device != x.device:
        raise ValueError(
            f"{where}: the key is on {k.device} but the data on {x.device}; create keys on the data's device "
            f"(hwr.random.key(seed, device=...) or key.to(device) once, before training)"
        )


def key(seed: int, device: torch.device | str | None = None) -> Key:
    """A key on ``device`` from an integer seed (any Python int; hashed, so nearby seeds give unrelated streams)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    lo, hi = seed & _MASK, (seed >> 32) & _MASK
    base = torch.tensor([lo, hi], dtype=torch.int64, device=device)
    return _mix(_mix(base ^ torch.tensor([0x12345678, 0x0BADBEEF], device=device)) ^ base.flip(0))


def split(k: Key, num: int = 2) -> Key:
    """``num`` new independent keys, shape ``(num, 2)``; unpack as ``k1, k2 = split(k)``."""
    _check_key(k)
    counter = torch.arange(2 * num, dtype=torch.int64, device=k.device) + 0x5F3759DF
    return _hash(counter, k).reshape(num, 2)


def fold_in(k: Key, data: int | torch.Tensor) -> Key:
    """A new key from ``k`` and an integer (a step, an epoch, a worker id); ``data`` may be a 0-d tensor."""
    _check_key(k)
    d = torch.as_tensor(data, dtype=torch.int64, device=k.device) & _MASK
    counter = torch.stack([d * 2, d * 2 + 1]) & _MASK
    return _hash(_mix(counter ^ 0x2545F491), k)


def bits(k: Key, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Uniform 32-bit integers in ``[0, 2**32)`` as an int64 tensor of ``shape``."""
    _check_key(k)
    n = math.prod(shape)
    return _hash(torch.arange(n, dtype=torch.int64, device=k.device), k).reshape(shape)


def uniform(
    k: Key,
    shape: tuple[int, ...] | torch.Size = (),
    *,
    low: float | torch.Tensor = 0.0,
    high: float | torch.Tensor = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform floats in ``[low, high)`` (24 random mantissa bits, so never exactly ``high``)."""
    u = (bits(k, shape) >> 8).to(dtype) * (1.0 / (1 << 24))
    return low + (high - low) * u


def normal(k: Key, shape: tuple[int, ...] | torch.Size = (), *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal samples by Box-Muller over two independent uniform streams.

    Computed in float64 and rounded to ``dtype``: float32 ``log``/``cos`` differ by a few ulp between eager
    ATen and inductor's vectorised kernels, float64 ones agree, so compiled and eager samples are equal.
    """
    k1, k2 = split(k)
    u1 = 1.0 - uniform(k1, shape, dtype=torch.float64)  # (0, 1]: log is finite
    u2 = uniform(k2, shape, dtype=torch.float64)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)


def bernoulli(k: Key, p: float | torch.Tensor = 0.5, shape: tuple[int, ...] | torch.Size = ()) -> torch.Tensor:
    """Boolean samples, True with probability ``p`` (``p`` broadcasts against ``shape``)."""
    return uniform(k, shape) < p


def randint(k: Key, shape: tuple[int, ...] | torch.Size, low: int, high: int) -> torch.Tensor:
    """Integers in ``[low, high)`` by multiply-shift (bias below 2**-32 relative for ranges < 2**31)."""
    span = high - low
    if not 0 < span < 2**31:
        raise ValueError(f"randint needs 0 < high - low < 2**31, got low={low}, high={high}")
    return low + ((bits(k, shape) * span) >> 32)


def permutation(k: Key, n: int) -> torch.Tensor:
    """A uniformly random permutation of ``range(n)`` (argsort of 63 random bits per element)."""
    k1, k2 = split(k)
    v = (bits(k1, (n,)) << 31) ^ bits(k2, (n,))
    return torch.argsort(v, stable=True)
