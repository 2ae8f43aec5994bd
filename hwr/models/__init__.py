"""Model families as pure functions, and the registry that names them.

A ``Model`` (``hwr.models.base``) is a NamedTuple of pure functions:

- ``init(key) -> params``: a nested dict of tensors;
- ``init_state() -> state``: explicit mutable-in-training statistics (``{}`` when the model has none);
- ``apply(params, state, x, *, key=None, train=False) -> (logits, state)`` with ``x`` float ``(B, C, H, W)``.

The registry maps a family name to ``(ConfigClass, build)`` so that the CLI, checkpoints and studies can
rebuild a model from ``(name, config dict)`` alone. It imports the families here, at the top; they import only
``hwr.models.base``, never this module (a one-way ladder).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from hwr.errors import InputError, UnknownNameError
from hwr.models import cnn, crnn, rnn, vit
from hwr.models.base import Model, check_input

__all__ = ["Model", "check_input", "config_from_dict", "get", "names", "register"]

_REGISTRY: dict[str, tuple[type, Callable[[Any], Model]]] = {
    "cnn": (cnn.CNNConfig, cnn.model),
    "crnn": (crnn.CRNNConfig, crnn.model),
    "rnn": (rnn.RNNConfig, rnn.model),
    "vit": (vit.ViTConfig, vit.model),
}


def register(name: str, config_cls: type, build: Callable[[Any], Model]) -> None:
    """Register a family (the built-in ones are above); ``build(config) -> Model``."""
    _REGISTRY[name] = (config_cls, build)


def names() -> list[str]:
    """Registered family names."""
    return sorted(_REGISTRY)


def config_from_dict(name: str, values: dict[str, Any] | None = None) -> Any:
    """The family's frozen config from a plain dict (as stored in ``config.json``), validating keys."""
    cls = _lookup(name)[0]
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"unknown {name} config field(s) {unknown}; known: {sorted(fields)}")
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
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown model {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]
