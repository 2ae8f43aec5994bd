"""Fixed-shape batches drawn from a key, and the uint8 -> float transform the step applies."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from hwr import random
from hwr.random import Key

__all__ = [
    "SAMPLING_POWERS",
    "Batch",
    "batches",
    "num_batches",
    "sampled_batches",
    "synthetic_batches",
    "to_float",
]


class Batch(NamedTuple):
    """A fixed-shape batch: ``images`` uint8 or float ``(B, C, H, W)``, ``labels`` int64 ``(B,)``, ``mask`` bool
    ``(B,)`` (False marks padding, so a short last batch never changes the compiled shapes)."""

    images: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor


def to_float(key: Key, images: torch.Tensor) -> torch.Tensor:
    """The default transform: uint8 pixels to float32 in ``[0, 1]`` (float input passes through)."""
    del key
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch over ``n`` images: ``n // batch_size`` when dropping the last partial batch, else
    ``ceil(n / batch_size)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def batches(
    key: Key | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = True,
    drop_last: bool = True,
) -> list[Batch]:
    """One epoch of fixed-shape batches ``(batch_size, C, H, W)``, on the images' device.

    The order is one keyed permutation (in order when ``key`` is None or ``shuffle`` is False), gathered with a
    single ``index_select`` and cut into views: no per-sample Python work. ``drop_last=False`` pads the last
    batch by repeating image 0 and marks the padding ``mask=False``, so every batch has the same shape and a
    compiled step never sees a new one."""
    n = images.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match {n} images")
    count = num_batches(n, batch_size, drop_last)
    if count == 0:
        return []
    device = images.device
    in_order = key is None or not shuffle
    order = torch.arange(n, device=device) if in_order else random.permutation(key, n).to(device)
    total = count * batch_size
    pad = torch.zeros(max(total - n, 0), dtype=order.dtype, device=device)  # padding repeats index 0, masked out
    order = torch.cat([order[:total], pad])
    mask = (torch.arange(total, device=device) < n).view(count, batch_size)
    xs = images.index_select(0, order).view(count, batch_size, *images.shape[1:])
    ys = labels.index_select(0, order).view(count, batch_size)
    return [Batch(x, y, m) for x, y, m in zip(xs.unbind(0), ys.unbind(0), mask.unbind(0))]


SAMPLING_POWERS = {"instance": 1.0, "sqrt": 0.5, "class_balanced": 0.0}


def sampled_batches(
    key: Key,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    power: float,
    count: int | None = None,
) -> list[Batch]:
    """``count`` fixed-shape batches drawn with replacement, class ``c`` with probability ``∝ n_c ** power``
    (Kang et al. 2020): ``power=0`` class-balanced (every class equally often), ``0.5`` square-root, ``1`` the
    instance distribution. Each image of class ``c`` is drawn with probability ``∝ n_c ** (power - 1)``: one keyed
    uniform draw and a ``searchsorted`` over the cumulative weights, no per-sample Python. ``count`` defaults to
    the batches of one instance-sampled epoch (``N // batch_size``)."""
    n = images.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match {n} images")
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"sampling power must be in [0, 1] (0 class-balanced, 1 instance), got {power}")
    count = num_batches(n, batch_size, drop_last=True) if count is None else count
    if count == 0:
        return []
    device = images.device
    per_class = torch.bincount(labels).to(torch.float64)  # (C,)
    w = per_class[labels].pow(power - 1.0)  # (N,) each image's weight
    cdf = torch.cumsum(w, 0)
    u = random.uniform(key, (count * batch_size,), dtype=torch.float64).to(device) * cdf[-1]
    order = torch.searchsorted(cdf, u, right=True).clamp_max(n - 1)
    xs = images.index_select(0, order).view(count, batch_size, *images.shape[1:])
    ys = labels.index_select(0, order).view(count, batch_size)
    mask = torch.ones(count, batch_size, dtype=torch.bool, device=device)
    return [Batch(x, y, m) for x, y, m in zip(xs.unbind(0), ys.unbind(0), mask.unbind(0))]


def synthetic_batches(
    key: Key, n: int, batch_size: int, *, channels: int = 1, size: int = 28, num_classes: int = 10
) -> list[Batch]:
    """``n`` keyed random uint8 batches ``(B, channels, size, size)`` with labels, all samples real: fixed inputs
    for benchmarks and smoke runs, identical in every process for the same key."""
    out = []
    for i in range(n):
        k_img, k_lab = random.split(random.fold_in(key, i))
        images = (random.uniform(k_img, (batch_size, channels, size, size)) * 255).to(torch.uint8)
        labels = random.randint(k_lab, (batch_size,), 0, num_classes)
        out.append(Batch(images, labels, torch.ones(batch_size, dtype=torch.bool)))
    return out
