"""Segment-then-classify: the reading of a digit string a user would try first with a trained digit classifier.

A string image is cut into its connected ink components (8-connected, pixels above ``threshold``); components
whose column spans overlap by more than ``merge`` of the narrower one are one digit (a 5's detached flag, a
broken stroke); specks under ``min_pixels`` are dropped; the rest, left to right, are each cropped to their own
pixels, made MNIST-style (``hwr.data.digits.mnist_style``) and classified by a digit model. Touching or
overlapping digits fuse into one component and are read as one digit: that is the failure a segmentation-free
CTC model does not have, and what ``benchmarks/strings_baseline.py`` measures against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

from hwr.data import digits
from hwr.errors import InputError

__all__ = ["Component", "components", "read"]

_EIGHT = np.ones((3, 3), dtype=bool)


class Component(NamedTuple):
    """One segmented digit: its first and last column and its ink, ``(H, W)`` float in ``[0, 1]`` (the whole
    image's frame, other components' pixels zeroed)."""

    x0: int
    x1: int
    ink: torch.Tensor


def components(
    image: torch.Tensor, *, threshold: float = 0.25, merge: float = 0.5, min_pixels: int = 4
) -> list[Component]:
    """The digit candidates of a string image ``(H, W)`` or ``(1, H, W)`` (uint8 or float in ``[0, 1]``, ink
    bright), left to right. Pure: ``image`` is not modified."""
    if not isinstance(image, torch.Tensor) or image.dim() not in (2, 3) or (image.dim() == 3 and image.shape[0] != 1):
        raise InputError(f"components takes an (H, W) or (1, H, W) image, got {getattr(image, 'shape', type(image))}")
    x = image.detach().cpu().reshape(image.shape[-2:]).float()
    x = x / 255.0 if image.dtype == torch.uint8 else x.clamp(0.0, 1.0)
    labels, _ = ndimage.label((x > threshold).numpy(), structure=_EIGHT)
    parts: list[tuple[int, int, set[int]]] = []  # (x0, x1, label ids)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or int((labels[sl] == i).sum()) < min_pixels:
            continue
        parts.append((sl[1].start, sl[1].stop - 1, {i}))
    parts.sort(key=lambda p: (p[0] + p[1]) / 2)
    merged: list[tuple[int, int, set[int]]] = []
    for a0, a1, ids in parts:
        if merged:
            b0, b1, prev = merged[-1]
            overlap = min(a1, b1) - max(a0, b0) + 1
            if overlap > merge * min(a1 - a0 + 1, b1 - b0 + 1):
                merged[-1] = (min(a0, b0), max(a1, b1), prev | ids)
                continue
        merged.append((a0, a1, ids))
    lab = torch.from_numpy(labels)
    out = []
    for x0, x1, ids in merged:
        keep = torch.isin(lab, torch.tensor(sorted(ids), dtype=lab.dtype))
        out.append(Component(x0, x1, torch.where(keep, x, torch.zeros(()))))
    return out


def read(
    classify: Callable[[torch.Tensor], torch.Tensor], images: Sequence[torch.Tensor], **options: float
) -> list[list[int]]:
    """Each string image read as the digits ``classify`` gives its components: ``classify`` maps uint8
    ``(K, 1, 28, 28)`` MNIST-style digits to ``(K,)`` class indices (one call for all images). ``options`` go
    to ``components``."""
    crops: list[torch.Tensor] = []
    counts: list[int] = []
    for image in images:
        parts = components(image, **options)
        counts.append(len(parts))
        crops.extend(digits.mnist_style(p.ink) for p in parts)
    if not crops:
        return [[] for _ in images]
    labels = classify(torch.stack(crops)).cpu().tolist()
    out, i = [], 0
    for k in counts:
        out.append([int(v) for v in labels[i : i + k]])
        i += k
    return out
