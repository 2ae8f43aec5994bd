"""Fixed-shape batches drawn from a key, and the uint8 -> float transform the step applies."""

from __future__ import annotations

from typing import NamedTuple

import torch

from hwr.random import Key

__all__ = ["Batch", "to_float"]


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
