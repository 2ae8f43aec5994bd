"""Keyed index selections over a label vector: stratified train/val splits, long-tailed subsets with an exponential
profile, balanced subsets. All are vectorised (one keyed permutation, a stable sort by label, a rank within each
class) and return sorted int64 index tensors on the labels' device; the same key gives the same indices."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hwr import random
from hwr.random import Key

__all__ = [
    "SPLIT_SEED",
    "balanced_indices",
    "class_counts",
    "class_order",
    "held_out_counts",
    "long_tail_counts",
    "long_tail_indices",
    "stratified_folds",
    "stratified_split",
]

SPLIT_SEED = 20_240_601  # the fixed train / validation split of a training set, the same for every training seed


def class_counts(labels: torch.Tensor, num_classes: int | None = None) -> list[int]:
    """Images per class, ``len == num_classes`` (default ``max(labels) + 1``)."""
    _check(labels)
    n = int(labels.max()) + 1 if num_classes is None and labels.numel() else (num_classes or 0)
    return torch.bincount(labels.cpu(), minlength=n).tolist()


def _check(labels: torch.Tensor) -> None:
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32):
        got = f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}"
        raise ValueError(f"labels must be a 1-D integer tensor, got {got}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")


def _ranked(key: Key | None, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order, rank)``: indices grouped by class (a keyed random order inside each class) and each one's rank
    within its class, so "the first ``n_c`` of class ``c``" is ``rank < n[labels[order]]``."""
    n = labels.shape[0]
    device = labels.device
    perm = random.permutation(key, n).to(device) if key is not None else torch.arange(n, device=device)
    order = perm[torch.sort(labels[perm], stable=True).indices]  # grouped by class, random within
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)  # first position of each one's class
    rank = torch.arange(n, device=device) - starts
    return order, rank


def _take(key: Key | None, labels: torch.Tensor, per_class: torch.Tensor) -> torch.Tensor:
    """Sorted indices of the first ``per_class[c]`` images of each class ``c`` in a keyed random order."""
    order, rank = _ranked(key, labels)
    chosen = order[rank < per_class.to(labels.device)[labels[order]]]
    return torch.sort(chosen).values


def held_out_counts(counts: torch.Tensor, fraction: float) -> torch.Tensor:
    """How many images of each class a split of ``fraction`` holds out: ``round(n_c * fraction)``, and with a
    fraction above 0 at least one of a class of two or more and never all of it (both sides keep an image)."""
    n = torch.round(counts.double() * fraction).long()
    if fraction > 0:
        n = torch.where(counts >= 2, n.clamp(1, None), n)
        n = torch.minimum(n, (counts - 1).clamp(min=0))
    return n


def stratified_split(key: Key, labels: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: ``round(n_c * val_fraction)`` images of each class go to validation, chosen with
    ``key``; every class with at least two images keeps at least one on each side."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    _check(labels)
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1 if labels.numel() else 0)
    val_idx = _take(key, labels, held_out_counts(counts, val_fraction))
    is_val = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    is_val[val_idx] = True
    return (~is_val).nonzero().squeeze(1), val_idx


def long_tail_counts(counts: Sequence[int], imbalance_ratio: float) -> list[int]:
    """Per-class targets of the exponential profile ``n_c = floor(n_0 * ratio ** (-c / (C - 1)))``, capped by
    the available ``counts[c]`` and at least 1. Class 0 is the head and keeps all its images; class ``C-1`` keeps
    ``n_0 / ratio``."""
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1 (head/tail), got {imbalance_ratio}")
    if not counts or min(counts) < 1:
        raise ValueError(f"every class needs at least one image to build a long tail, got counts {list(counts)}")
    c_total = len(counts)
    head = counts[0]
    out = []
    for c, available in enumerate(counts):
        frac = imbalance_ratio ** (-c / (c_total - 1)) if c_total > 1 else 1.0
        target = math.floor(head * frac + 1e-9)  # the epsilon keeps e.g. 99.99999 from flooring to 99
        out.append(max(1, min(available, target)))
    return out


def long_tail_indices(
    key: Key,
    labels: torch.Tensor,
    imbalance_ratio: float,
    num_classes: int,
    order: Sequence[int] | None = None,
) -> torch.Tensor:
    """Sorted indices of a keyed long-tailed subset whose class counts are ``long_tail_counts``. ``order`` ranks
    the classes from head to tail (``order[0]`` keeps all its images); default ``0, 1, ..., C-1``."""
    _check(labels)
    counts = torch.bincount(labels, minlength=num_classes)
    if counts.shape[0] != num_classes:
        raise ValueError(f"labels reach {counts.shape[0] - 1}, outside num_classes={num_classes}")
    order = list(range(num_classes)) if order is None else [int(c) for c in order]
    if sorted(order) != list(range(num_classes)):
        raise ValueError(f"order must be a permutation of 0..{num_classes - 1}, got {order}")
    ranked = long_tail_counts([int(counts[c]) for c in order], imbalance_ratio)
    targets = [0] * num_classes
    for rank, c in enumerate(order):
        targets[c] = ranked[rank]
    return _take(key, labels, torch.tensor(targets, device=labels.device))


def class_order(key: Key | None, num_classes: int) -> list[int]:
    """Classes from head to tail: ``0..C-1`` for ``key=None``, else a keyed permutation (another long-tail draw)."""
    if key is None:
        return list(range(num_classes))
    return random.permutation(key, num_classes).tolist()


def stratified_folds(key: Key, labels: torch.Tensor, folds: int) -> torch.Tensor:
    """The fold ``(N,)`` int64 of each sample for stratified ``folds``-fold cross-validation: within every class,
    in a keyed random order, samples are dealt to folds in turn, so each fold holds ``n_c / folds`` (+-1) of class
    ``c``. A class with fewer than ``folds`` images is absent from some folds' validation part."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    _check(labels)
    order, rank = _ranked(key, labels)
    out = torch.empty_like(labels)
    out[order] = rank % folds
    return out


def balanced_indices(key: Key | None, labels: torch.Tensor, per_class: int | None = None) -> torch.Tensor:
    """Sorted indices of ``per_class`` images of every class (default: the smallest class's count)."""
    _check(labels)
    counts = torch.bincount(labels)
    present = counts[counts > 0]
    smallest = int(present.min()) if present.numel() else 0
    if per_class is None:
        per_class = smallest
    if per_class < 0 or per_class > smallest:
        short = [c for c, n in enumerate(counts.tolist()) if 0 < n < per_class]
        raise ValueError(
            f"per_class={per_class} exceeds the images of class(es) {short} "
            f"(smallest class has {smallest}); ask for at most {smallest}"
        )
    return _take(key, labels, torch.full_like(counts, per_class))
