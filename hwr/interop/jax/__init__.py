"""JAX interop, the public entry point: pytrees through DLPack, Flax layouts and a JAX forward for every model
family, training in JAX from an hwr state and back, and checkpoints a JAX user reads without torch.

- ``to_jax`` / ``from_jax``: leaf-wise DLPack, zero copy where the buffer allows it (contiguous, aligned), a
  contiguous copy where DLPack needs one. The result shares memory with its source: both frameworks treat the
  buffer as immutable (hwr never writes in place), but do not donate a JAX array whose torch view you still use.
- ``to_flax`` / ``from_flax``: hwr keeps torch layouts (conv OIHW, linear ``(out, in)``, packed recurrent gates,
  packed attention ``qkv``, NCHW flattening); Flax uses conv HWIO, dense ``(in, out)``, a dense per gate,
  ``MultiHeadDotProductAttention``'s query/key/value/out and NHWC flattening. Exact both ways. Per-family layouts:
  ``jax_cnn``, ``jax_rnn``, ``jax_vit``, ``jax_crnn``. ``stats_to_flax`` / ``stats_from_flax``: batch-norm
  statistics.
- ``apply(name, params, x, config, *, state, key, train)``: any family's forward in JAX on NHWC input, equal to
  ``models.get(name, config).apply`` (dropout too, from an hwr key: ``jax_random``); ``cnn_apply``,
  ``rnn_apply``, ``vit_apply``: the logits alone. ``TWINS`` lists the families; ``missing_twins()`` those without.
- ``train_step``, ``from_hwr_state``, ``to_hwr_state``, ``adam_state_from_optax`` (``jax_train``): hwr's train
  step in JAX with optax, and the state there and back.
- ``save_for_jax``: any family's Flax-layout parameters (and batch stats) as a safetensors file whose metadata
  names the family and config; a JAX user reads it with ``safetensors`` alone::

      from safetensors import safe_open
      from safetensors.flax import load_file
      flat = load_file("model.safetensors")                  # {"block1.conv1.kernel": (3, 3, 1, 32), ...}
      with safe_open("model.safetensors", "np") as f:
          meta = json.loads(f.metadata()["hwr"])             # {"model": "cnn", "config": {...}, "layout": ...}
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
from safetensors.torch import save as st_save

from hwr import files, tree
from hwr.interop.jax import random as jax_random
from hwr.interop.jax.common import from_jax, to_jax
from hwr.interop.jax.families import (
    TWINS,
    apply,
    family_of,
    from_flax,
    missing_twins,
    resolve,
    stats_from_flax,
    stats_to_flax,
    to_flax,
)
from hwr.interop.jax.train import JaxTrainState, adam_state_from_optax, from_hwr_state, to_hwr_state, train_step
from hwr.models.cnn import CNNConfig
from hwr.models.rnn import RNNConfig
from hwr.models.vit import ViTConfig
from hwr.tree import PyTree

__all__ = [
    "FORMAT",
    "STATS_PREFIX",
    "TWINS",
    "JaxTrainState",
    "adam_state_from_optax",
    "apply",
    "cnn_apply",
    "family_of",
    "from_flax",
    "from_hwr_state",
    "from_jax",
    "jax_random",
    "load_for_jax",
    "missing_twins",
    "rnn_apply",
    "save_for_jax",
    "stats_from_flax",
    "stats_to_flax",
    "to_flax",
    "to_hwr_state",
    "to_jax",
    "train_step",
    "vit_apply",
]

FORMAT = "hwr-flax/1"  # the metadata's "format": bump when the file layout changes
STATS_PREFIX = "batch_stats."  # names of batch-norm statistics in a saved file


def cnn_apply(
    params: dict[str, Any],
    x: jax.Array,
    config: CNNConfig,
    *,
    state: dict[str, Any] | None = None,
    train: bool = False,
    key: jax.Array | None = None,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """``hwr.models.cnn``'s forward in JAX: Flax-layout ``params``, ``x`` float ``(B, H, W, C)`` -> logits
    ``(B, num_classes)``. Batch norm uses batch statistics when ``train``, ``state``'s otherwise (``apply``
    returns the updated statistics too)."""
    return apply("cnn", params, x, config, state=state, key=key, train=train, precision=precision)[0]


def rnn_apply(
    params: dict[str, Any],
    x: jax.Array,
    config: RNNConfig,
    *,
    train: bool = False,
    key: jax.Array | None = None,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """``hwr.models.rnn``'s forward in JAX: ``x`` float ``(B, H, W, C)`` -> logits ``(B, num_classes)``."""
    return apply("rnn", params, x, config, key=key, train=train, precision=precision)[0]


def vit_apply(
    params: dict[str, Any],
    x: jax.Array,
    config: ViTConfig,
    *,
    train: bool = False,
    key: jax.Array | None = None,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """``hwr.models.vit``'s forward in JAX: ``x`` float ``(B, H, W, C)`` -> logits ``(B, num_classes)``."""
    return apply("vit", params, x, config, key=key, train=train, precision=precision)[0]


# ---------------------------------------------------------------------------------------------- checkpoints


def save_for_jax(path: str | os.PathLike, params: PyTree, config: Any = None, *, state: PyTree | None = None) -> Path:
    """Atomically write any family's parameters in Flax layouts to a safetensors file a JAX user reads without
    torch.

    Tensors are named by dotted path (``block1.conv1.kernel``), batch stats (``state``, the model state) under
    ``batch_stats.``; the header metadata ``"hwr"`` is JSON with ``format``, ``model`` (the family), ``config``
    (the dataclass as a dict: ``hwr.models.config_from_dict(model, config)`` rebuilds it) and ``layout``.
    ``config`` may be omitted for a CNN (inferred from the kernels)."""
    named = tree.flatten_names(params)
    twin, config = resolve(named, config, flax_layout=False)
    flat = {k: v.detach().clone() for k, v in twin.to_flax(named, config).items()}
    for k, v in tree.flatten_names(state or {}).items():
        flat[STATS_PREFIX + k] = v.detach().clone()
    meta = {"format": FORMAT, "model": twin.name, "config": dataclasses.asdict(config), "layout": twin.layout}
    return files.write_bytes(path, st_save(flat, metadata={"hwr": json.dumps(meta)}))


def load_for_jax(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(params, batch_stats, meta)`` of a ``save_for_jax`` file as nested dicts of JAX arrays (what a JAX user
    writes with ``safetensors.flax.load_file``; this helper imports hwr, hence torch)."""
    from safetensors import safe_open
    from safetensors.flax import load_file

    flat = load_file(str(path))
    with safe_open(str(path), "np") as f:
        meta = json.loads((f.metadata() or {}).get("hwr", "null"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a save_for_jax file of format {FORMAT!r} (metadata: {meta!r})")
    params = {k: v for k, v in flat.items() if not k.startswith(STATS_PREFIX)}
    stats = {k[len(STATS_PREFIX) :]: v for k, v in flat.items() if k.startswith(STATS_PREFIX)}
    return tree.unflatten_names(params), tree.unflatten_names(stats), meta
