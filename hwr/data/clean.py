"""Checks at the data's edge: ``validate`` rejects what would silently poison training (NaN, out-of-range
pixels, labels outside the class set, wrong shapes or dtypes); ``duplicates`` finds test images that also appear
in the training split; ``normalization_stats`` measures the training split only, so the test set never leaks."""

from __future__ import annotations

import torch

__all__ = ["duplicates", "normalization_stats", "validate"]


def validate(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, name: str = "") -> None:
    """Raise ``ValueError`` naming the problem unless ``images`` is uint8 ``(N, C, H, W)`` (or float in
    ``[0, 1]`` with no NaN/inf) and ``labels`` is int64 ``(N,)`` with values in ``[0, num_classes)``."""
    where = f"{name}: " if name else ""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(
            f"{where}images and labels must be tensors, got {type(images).__name__} and {type(labels).__name__}"
        )
    if images.ndim != 4:
        raise ValueError(
            f"{where}images must be (N, C, H, W), got shape {tuple(images.shape)}; add the channel "
            "axis with images.unsqueeze(1)"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{where}no images (shape {tuple(images.shape)})")
    if images.dtype == torch.uint8:
        pass  # every value is a valid pixel
    elif images.is_floating_point():
        bad = ~torch.isfinite(images)
        if bad.any():
            i = int(bad.flatten(1).any(1).nonzero()[0])
            raise ValueError(f"{where}images hold {int(bad.sum())} NaN/inf pixel(s), first in image {i}")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{where}float pixels must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; divide uint8 by 255")
    else:
        raise ValueError(f"{where}images must be uint8 or float, got {images.dtype}")
    if labels.dtype != torch.int64:
        raise ValueError(f"{where}labels must be int64, got {labels.dtype}; use labels.long()")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{where}labels of shape {tuple(labels.shape)} do not match {images.shape[0]} images")
    if num_classes < 1:
        raise ValueError(f"{where}num_classes must be >= 1, got {num_classes}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad_label = lo if lo < 0 else hi
        raise ValueError(
            f"{where}label {bad_label} is outside the class set [0, {num_classes}); "
            f"{int(((labels < 0) | (labels >= num_classes)).sum())} label(s) affected"
        )


def duplicates(train_images: torch.Tensor, test_images: torch.Tensor) -> torch.Tensor:
    """Sorted int64 indices of the test images that exactly equal some training image (rows hashed as bytes)."""
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"image shapes differ: train {tuple(train_images.shape[1:])}, test {tuple(test_images.shape[1:])}"
        )
    tr = train_images.detach().cpu().contiguous().flatten(1).numpy()
    te = test_images.detach().cpu().contiguous().flatten(1).numpy()
    seen = {row.tobytes() for row in tr}
    hits = [i for i, row in enumerate(te) if row.tobytes() in seen]
    return torch.tensor(hits, dtype=torch.int64)


def normalization_stats(images: torch.Tensor) -> tuple[float, float]:
    """``(mean, std)`` of the pixels scaled to ``[0, 1]`` (uint8 / 255), in float64. Pass the TRAINING split."""
    if images.numel() == 0:
        raise ValueError("normalization_stats of an empty tensor; pass the training images")
    if images.dtype == torch.uint8:  # exact, from the 256-bin histogram (no float copy of the whole set)
        counts = torch.bincount(images.detach().flatten().cpu(), minlength=256).double()
        v = torch.arange(256, dtype=torch.float64) / 255.0
        n = counts.sum()
        mean_t = (counts * v).sum() / n
        var_t = (counts * (v - mean_t) ** 2).sum() / n
    else:
        x = images.detach().flatten().double()
        mean_t = x.mean()
        var_t = ((x - mean_t) ** 2).mean()
    mean, std = float(mean_t), float(var_t.sqrt())
    if std == 0.0:
        raise ValueError(f"training images are constant ({mean:.4g}); normalising would divide by zero")
    return mean, std
