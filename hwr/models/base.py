"""What every model family builds on: the ``Model`` NamedTuple of pure functions and the input check.

A ``Model`` is:

- ``init(key) -> params``: a nested dict of tensors;
- ``init_state() -> state``: explicit mutable-in-training statistics (``{}`` when the model has none);
- ``apply(params, state, x, *, key=None, train=False) -> (logits, state)`` with ``x`` float ``(B, C, H, W)``.

Family modules (``cnn``, ``rnn``, ``vit``, ``crnn``) import this module and never the registry
(``hwr.models``), which imports them: a one-way ladder ``base <- families <- hwr.models``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from hwr import nn, random
from hwr.random import Key

__all__ = ["Model", "apply_head", "check_input", "dropout_keys", "init_head"]


class Model(NamedTuple):
    """A stateless model: ``init``, ``apply`` and ``init_state`` are pure; ``config`` is what built them."""

    init: Callable[[Key], dict[str, Any]]
    apply: Callable[..., tuple[torch.Tensor, dict[str, Any]]]
    init_state: Callable[[], dict[str, Any]]
    config: Any
    name: str


def check_input(x: torch.Tensor, channels: int, size: int) -> None:
    """Raise a clear error unless ``x`` is float ``(B, channels, size, size)``; static, so free under compile."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"model input must be a float tensor (B, {channels}, {size}, {size}) in [0, 1] or normalised, "
            f"got {getattr(x, 'dtype', type(x).__name__)}; convert uint8 images with hwr.data.batches.to_float"
        )
    if x.dim() != 4 or tuple(x.shape[1:]) != (channels, size, size):
        raise ValueError(
            f"model input must have shape (B, {channels}, {size}, {size}), got {tuple(x.shape)}; "
            "add the channel axis with x[:, None] or resize the images"
        )


def dropout_keys(key: Key | None, n: int, rate: float, train: bool) -> list[Key | None]:
    """``n`` independent keys for a model's ``n`` dropout sites, or ``n`` Nones when no dropout runs (evaluation,
    or ``rate`` 0). Dropout in training without a key is an error, never a silent draw from a global RNG."""
    if not (train and rate > 0.0):
        return [None] * n
    if key is None:
        raise ValueError("dropout in training needs key=...; derive one with hwr.random.fold_in(key, step)")
    return list(random.split(key, n))


def init_head(key: Key, features: int, num_classes: int, hidden: int = 0) -> dict[str, Any]:
    """The classifier after a family's features: ``{"head"}`` (a linear layer, from ``key`` itself), or with
    ``hidden > 0`` ``{"fc", "head"}`` (a ReLU layer of ``hidden`` units, then the linear head; ``key`` split in
    two). Fine-tuning searches this width for a fresh hidden layer over a pretrained backbone."""
    if hidden < 0:
        raise ValueError(f"head hidden width must be >= 0 (0: no hidden layer), got {hidden}")
    if not hidden:
        return {"head": nn.init_linear(key, features, num_classes)}
    k_fc, k_head = random.split(key)
    return {"fc": nn.init_linear(k_fc, features, hidden), "head": nn.init_linear(k_head, hidden, num_classes)}


def apply_head(params: dict[str, Any], features: torch.Tensor) -> torch.Tensor:
    """``(B, F) -> (B, num_classes)`` through ``init_head``'s layers (the hidden ReLU layer where there is one)."""
    if "fc" in params:
        features = torch.relu(nn.linear(params["fc"], features))
    return nn.linear(params["head"], features)
