"""Model families as pure functions, and the registry that names them.

A ``Model`` is a NamedTuple of pure functions:

- ``init(key) -> params``: a nested dict of tensors;
- ``init_state() -> state``: explicit mutable-in-training statistics (``{}`` when the model has none);
- ``apply(params, state, x, *, key=None, train=False) -> (logits, state)`` with ``x`` float ``(B, C, H, W)``.

The registry maps a family name to ``(ConfigClass, build)`` so that the CLI, checkpoints and studies can
rebuild a model from ``(name, config dict)`` alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from hwr.random import Key

__all__ = ["Model", "check_input", "config_from_dict", "get", "names", "register"]


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


_REGISTRY: dict[str, tuple[type, Callable[[Any], Model]]] = {}


def register(name: str, config_cls: type, build: Callable[[Any], Model]) -> None:
    """Register a family; ``build(config) -> Model``."""
    _REGISTRY[name] = (config_cls, build)


def names() -> list[str]:
    """Registered family names."""
    _load()
    return sorted(_REGISTRY)


def config_from_dict(name: str, values: dict[str, Any] | None = None) -> Any:
    """The family's frozen config from a plain dict (as stored in ``config.json``), validating keys."""
    cls = _lookup(name)[0]
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {name} config field(s) {unknown}; known: {sorted(fields)}")
    for k, v in values.items():
        if isinstance(v, list):
            values[k] = tuple(v)
    return cls(**values)


def get(name: str, config: Any | None = None) -> Model:
    """Build the registered model ``name`` from ``config`` (a config instance, a dict, or None for defaults)."""
    cls, build = _lookup(name)
    if config is None or isinstance(config, dict):
        config = config_from_dict(name, config)
    elif not isinstance(config, cls):
        raise TypeError(f"model {name!r} needs a {cls.__name__}, got {type(config).__name__}")
    return build(config)


def _lookup(name: str) -> tuple[type, Callable[[Any], Model]]:
    _load()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def _load() -> None:
    # Families register themselves on import; importing here keeps `hwr.models.get` complete.
    from hwr.models import cnn, crnn, rnn, vit  # noqa: F401
