"""The registry of JAX twins and what dispatches on it: Flax layouts for any family's parameters and batch stats,
and the JAX forward by family name.

A family is found by its config's class (``CNNConfig`` -> ``cnn``); the CNN alone can also be recognised from its
parameters, so ``to_flax(params)`` without a config keeps working for it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import jax
import jax.numpy as jnp
import torch
from torch.utils import _pytree

from hwr import models, random, tree
from hwr.interop.jax import cnn as jax_cnn
from hwr.interop.jax import rnn as jax_rnn
from hwr.interop.jax import vit as jax_vit
from hwr.interop.jax.common import Twin, from_jax, to_jax
from hwr.tree import PyTree

__all__ = [
    "TWINS",
    "apply",
    "family_of",
    "from_flax",
    "missing_twins",
    "resolve",
    "stats_from_flax",
    "stats_to_flax",
    "to_flax",
]

TWINS: dict[str, Twin] = {t.name: t for t in (jax_cnn.TWIN, jax_rnn.TWIN, jax_vit.TWIN)}
if importlib.util.find_spec("hwr.models.crnn") is not None:  # the strings family lands on its own schedule
    from hwr.interop.jax import crnn as jax_crnn

    TWINS["crnn"] = jax_crnn.TWIN


def missing_twins() -> list[str]:
    """Registered families (``hwr.models.names()``) that have no JAX twin here."""
    return [n for n in models.names() if n not in TWINS]


def family_of(config: Any) -> Twin:
    """The twin of the family ``config`` (a config instance) belongs to."""
    for twin in TWINS.values():
        if isinstance(config, twin.config_cls):
            return twin
    raise TypeError(
        f"no JAX twin for a {type(config).__name__}; twins exist for {sorted(TWINS)} "
        f"({', '.join(t.config_cls.__name__ for t in TWINS.values())})"
    )


def resolve(named: dict[str, torch.Tensor], config: Any, flax_layout: bool) -> tuple[Twin, Any]:
    """(twin, config) for flattened parameters: ``config``'s family, or a CNN config inferred from the kernels."""
    if config is not None:
        return family_of(config), config
    top = {k.split(".")[0] for k in named}
    if not any(k.startswith("block") for k in top) or "embed" in top or "layer1" in top:
        raise ValueError(
            f"only CNN parameters can be converted without a config (top-level names {sorted(top)}); pass "
            "config= (the RNNConfig, ViTConfig, ... the model was built with, model.config)"
        )
    return jax_cnn.TWIN, jax_cnn.infer_config(named, flax_layout=flax_layout)


def _as_torch(params: PyTree) -> PyTree:
    return _pytree.tree_map(lambda x: x if isinstance(x, torch.Tensor) else from_jax(jnp.asarray(x)), params)


def _order_like(template: PyTree, named: dict[str, Any], what: str) -> dict[str, Any]:
    """``named`` as a nested dict in ``template``'s key order (hwr's), refusing missing or unexpected names."""
    want = list(tree.flatten_names(template))
    missing, extra = sorted(set(want) - set(named)), sorted(set(named) - set(want))
    if missing or extra:
        raise ValueError(
            f"{what} do not match the config: missing {missing[:5] or '-'}, unexpected "
            f"{extra[:5] or '-'}; pass the config the parameters were made with"
        )
    return tree.unflatten_names({k: named[k] for k in want})


def _template(twin: Twin, config: Any) -> Any:
    return models.get(twin.name, config)


def to_flax(params: PyTree, config: Any = None) -> dict[str, Any]:
    """hwr parameters of any family (torch layouts) -> the same tree in Flax layouts, as JAX arrays.

    ``config`` (``model.config``) names the family and the shapes; without it the parameters must be a CNN's and
    its config is inferred from the kernels (square maps). Each family's layout is in its module's docstring
    (``hwr.interop.jax.cnn``, ``jax_rnn``, ``jax_vit``)."""
    named = tree.flatten_names(params)
    twin, config = resolve(named, config, flax_layout=False)
    return to_jax(tree.unflatten_names(twin.to_flax(named, config)))


def from_flax(params: PyTree, config: Any = None) -> dict[str, Any]:
    """Inverse of ``to_flax``: Flax-layout JAX (or NumPy, or torch) arrays in any key order -> hwr params as torch
    tensors in hwr's key order (structures compare equal with ``hwr.tree``)."""
    named = tree.flatten_names(_as_torch(params))
    twin, config = resolve(named, config, flax_layout=True)
    meta = random.key(0, device="meta")
    return _order_like(_template(twin, config).init(meta), twin.from_flax(named, config), "parameters")


def stats_to_flax(state: PyTree) -> dict[str, Any]:
    """hwr's ``model_state`` (batch-norm ``mean``/``var`` per norm) -> Flax ``batch_stats``: same names and
    shapes, as JAX arrays (zero copy)."""
    return to_jax(state)


def stats_from_flax(stats: PyTree, config: Any) -> dict[str, Any]:
    """Flax ``batch_stats`` -> hwr's ``model_state`` for ``config``'s model, in hwr's key order."""
    twin = family_of(config)
    named = tree.flatten_names(_as_torch(stats or {}))
    return _order_like(_template(twin, config).init_state(), named, "batch stats")


def apply(
    name: str,
    params: PyTree,
    x: jax.Array,
    config: Any = None,
    *,
    state: PyTree | None = None,
    key: jax.Array | None = None,
    train: bool = False,
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Family ``name``'s forward in JAX, as ``models.get(name, config).apply``: Flax-layout ``params``
    (``to_flax``), ``x`` float NHWC ``(B, H, W, C)`` -> ``(logits (B, num_classes), new state)``.

    ``config``: the family's config (None: its defaults). ``state``: batch stats (``stats_to_flax``); in training
    the new running statistics come back as hwr computes them. ``key``: an hwr key in JAX (``jax_random``) for
    dropout in training; the masks equal hwr's for the same key. ``precision``: JAX matmul/conv precision."""
    if name not in TWINS:
        raise KeyError(f"no JAX twin for family {name!r}; twins: {sorted(TWINS)}")
    twin = TWINS[name]
    config = twin.config_cls() if config is None else config
    if not isinstance(config, twin.config_cls):
        raise TypeError(f"family {name!r} needs a {twin.config_cls.__name__}, got {type(config).__name__}")
    return twin.forward(params, state, x, config, key=key, train=train, precision=precision)
