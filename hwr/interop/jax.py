"""Pytrees to and from JAX, Flax parameter layouts, a JAX forward of the CNN, and torch-free checkpoints.

- ``to_jax`` / ``from_jax``: leaf-wise DLPack, zero copy where the buffer allows it (contiguous, aligned), a
  contiguous copy where DLPack needs one. The result shares memory with its source: both frameworks treat the
  buffer as immutable (hwr never writes in place), but do not donate a JAX array whose torch view you still use.
- ``to_flax`` / ``from_flax``: hwr keeps torch layouts (conv OIHW, linear ``(out, in)``, NCHW flattening); Flax
  uses conv HWIO, dense ``(in, out)`` and flattens NHWC. The first dense layer after flattening has its input
  rows permuted so that ``cnn_apply`` on NHWC images equals ``hwr.models.cnn`` on the NCHW ones.
- ``cnn_apply``: the seed CNN family's forward in pure JAX (dropout off; batch norm with batch or running stats).
- ``save_for_jax``: Flax-layout parameters as a safetensors file whose metadata holds the config; a JAX user reads
  it with ``safetensors.flax.load_file`` (or ``safetensors.numpy``) alone::

      from safetensors import safe_open
      from safetensors.flax import load_file
      flat = load_file("model.safetensors")                  # {"block1.conv1.kernel": (3, 3, 1, 32), ...}
      with safe_open("model.safetensors", "np") as f:
          meta = json.loads(f.metadata()["hwr"])             # {"model": "cnn", "config": {...}, "layout": ...}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import torch
from safetensors.torch import save as st_save
from torch.utils import _pytree

from hwr import files, tree
from hwr.models.cnn import CNNConfig
from hwr.tree import PyTree

__all__ = ["FORMAT", "cnn_apply", "from_flax", "from_jax", "save_for_jax", "to_flax", "to_jax"]

FORMAT = "hwr-flax/1"  # the metadata's "format": bump when the file layout changes
_WIDE = (torch.float64, torch.int64, torch.uint64, torch.complex128)


# ---------------------------------------------------------------------------------------------- DLPack


def _leaf_to_jax(name: str, t: torch.Tensor) -> jax.Array:
    if t.dtype in _WIDE and not jax.config.jax_enable_x64:
        raise TypeError(
            f"leaf {name!r} is {t.dtype}, but JAX has 64-bit types disabled and would silently narrow it; call "
            "jax.config.update('jax_enable_x64', True) first, or cast the leaf to 32 bits"
        )
    t = t.detach()
    if t.requires_grad or not t.is_contiguous():
        t = t.contiguous()
    return jax.dlpack.from_dlpack(t)


def to_jax(pytree: PyTree) -> PyTree:
    """Torch tensors -> JAX arrays leaf-wise (non-tensor leaves pass through); same structure, same dtypes.

    Zero copy for contiguous, aligned tensors (torch's allocations are); a non-contiguous tensor is made contiguous
    first. 64-bit leaves (step counters, keys) need ``jax_enable_x64``: without it they are refused, not narrowed.
    """
    flat, spec = _pytree.tree_flatten_with_path(pytree)
    out = []
    for path, leaf in flat:
        if isinstance(leaf, torch.Tensor):
            leaf = _leaf_to_jax(_pytree.keystr(path), leaf)
        out.append(leaf)
    return _pytree.tree_unflatten(out, spec)


def from_jax(pytree: PyTree) -> PyTree:
    """JAX arrays -> torch tensors leaf-wise through DLPack (zero copy); other leaves pass through.

    Walks the tree with torch's pytree (dicts keep their key order, NamedTuples stay NamedTuples)."""
    return _pytree.tree_map(lambda x: torch.from_dlpack(x) if isinstance(x, jax.Array) else x, pytree)


# ---------------------------------------------------------------------------------------------- Flax layouts


def _flat_shape(named: dict[str, Any], config: CNNConfig | None, conv_out_axis: int) -> tuple[str | None, int, int]:
    """(name of the first dense kernel after flattening, channels C, side S) of the flattened (C, S, S) map."""
    convs = [v for k, v in named.items() if k.endswith("kernel") and v.ndim == 4]
    dense = [k for k, v in named.items() if k.endswith("kernel") and v.ndim == 2]
    if not convs or not dense:
        return None, 0, 0
    if config is not None:
        return dense[0], config.channels[-1], config.feature_size
    ch = int(convs[-1].shape[conv_out_axis])
    in_features = int(named[dense[0]].shape[1 if conv_out_axis == 0 else 0])
    side = math.isqrt(in_features // ch) if in_features % ch == 0 else 0
    if side * side * ch != in_features:
        raise ValueError(
            f"cannot infer the flattened feature map: {dense[0]} takes {in_features} inputs, not C*S*S with C={ch} "
            "from the last conv; pass config=CNNConfig(...) of the model these parameters belong to"
        )
    return dense[0], ch, side


def _convert(params: PyTree, config: CNNConfig | None, to_flax_layout: bool) -> dict[str, torch.Tensor]:
    named = tree.flatten_names(params)
    first_dense, ch, side = _flat_shape(named, config, 0 if to_flax_layout else 3)
    out = {}
    for name, t in named.items():
        if name.endswith("kernel") and t.ndim == 4:
            t = t.permute(2, 3, 1, 0) if to_flax_layout else t.permute(3, 2, 0, 1)  # OIHW <-> HWIO
        elif name == first_dense and to_flax_layout:
            n_out = t.shape[0]  # (out, C*S*S) -> (S*S*C, out): NCHW rows reordered as NHWC rows
            t = t.reshape(n_out, ch, side, side).permute(2, 3, 1, 0).reshape(side * side * ch, n_out)
        elif name == first_dense:
            n_out = t.shape[1]  # (S*S*C, out) -> (out, C*S*S)
            t = t.reshape(side, side, ch, n_out).permute(3, 2, 0, 1).reshape(n_out, ch * side * side)
        elif name.endswith("kernel") and t.ndim == 2:
            t = t.T  # (out, in) <-> (in, out)
        out[name] = t.contiguous()
    return out


def to_flax(params: PyTree, config: CNNConfig | None = None) -> dict[str, Any]:
    """hwr CNN params (torch layouts) -> the same nested dict as JAX arrays in Flax layouts.

    Conv kernels OIHW -> HWIO, dense kernels ``(out, in)`` -> ``(in, out)``, and the first dense layer after
    flattening also reorders its input rows from NCHW to NHWC flattening. ``config`` names the flattened map's
    shape; without it the shape is inferred from the kernels (square maps).
    """
    return to_jax(tree.unflatten_names(_convert(params, config, True)))


def from_flax(params: PyTree, config: CNNConfig | None = None) -> dict[str, Any]:
    """Inverse of ``to_flax``: Flax-layout JAX (or NumPy, or torch) arrays -> hwr params as torch tensors."""
    as_torch = _pytree.tree_map(lambda x: x if isinstance(x, torch.Tensor) else from_jax(jnp.asarray(x)), params)
    return _hwr_order(tree.unflatten_names(_convert(as_torch, config, False)))


_RANK = {n: i for i, n in enumerate(("block", "conv", "norm", "fc", "head", "kernel", "scale", "bias"))}


def _hwr_order(d: Any) -> Any:
    """Dict keys in the order ``hwr.models.cnn`` creates them (block1 < block2 < fc < head, conv1 < norm1 < conv2,
    kernel < scale < bias), whatever order a Flax user's dict had, so ``hwr.tree`` structures compare equal."""
    if not isinstance(d, dict):
        return d

    def rank(name: str) -> tuple[float, int, str]:
        stem = name.rstrip("0123456789")
        index = float(name[len(stem) :]) if len(stem) < len(name) else math.inf
        return index, _RANK.get(stem, len(_RANK)), name

    return {k: _hwr_order(d[k]) for k in sorted(d, key=rank)}


# ---------------------------------------------------------------------------------------------- JAX forward


def _batch_norm(p: dict, s: dict | None, x: jax.Array, train: bool, eps: float = 1e-5) -> jax.Array:
    if train:
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    elif s is None:
        raise ValueError("batch norm in inference needs state= (running statistics); pass train=True for batch stats")
    else:
        mean, var = s["mean"], s["var"]
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def cnn_apply(
    params: dict[str, Any],
    x: jax.Array,
    config: CNNConfig,
    *,
    state: dict[str, Any] | None = None,
    train: bool = False,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """``hwr.models.cnn``'s forward in JAX: Flax-layout ``params`` (``to_flax``), ``x`` float ``(B, H, W, C)`` ->
    logits ``(B, num_classes)``. Dropout is off; batch norm normalises with batch statistics when ``train``
    (running statistics are not updated) and with ``state``'s (``to_jax(model_state)``) otherwise."""
    c = config
    for b in range(1, len(c.channels) + 1):
        block = params[f"block{b}"]
        for j in range(1, c.convs_per_block + 1):
            conv = block[f"conv{j}"]
            pad = c.kernel_size // 2
            x = jax.lax.conv_general_dilated(
                x, conv["kernel"], (1, 1), [(pad, pad), (pad, pad)],
                dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
            )  # (B, H, W, C_b)
            if "bias" in conv:
                x = x + conv["bias"]
            if c.norm == "batch":
                s = None if state is None else state[f"block{b}"][f"norm{j}"]
                x = _batch_norm(block[f"norm{j}"], s, x, train)
            x = jax.nn.relu(x)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")  # (B, H/2, W/2, C)
    x = x.reshape(x.shape[0], -1)  # (B, S*S*C), NHWC order
    if c.hidden:
        x = jax.nn.relu(jnp.dot(x, params["fc"]["kernel"], precision=precision) + params["fc"]["bias"])
    return jnp.dot(x, params["head"]["kernel"], precision=precision) + params["head"]["bias"]  # (B, classes)


# ---------------------------------------------------------------------------------------------- checkpoints


def save_for_jax(path: str | os.PathLike, params: PyTree, config: CNNConfig | None = None) -> Path:
    """Atomically write Flax-layout ``params`` to a safetensors file a JAX user reads without torch.

    Tensors are named by dotted path (``block1.conv1.kernel``); the header metadata ``"hwr"`` is JSON with
    ``format``, ``model``, ``config`` (the dataclass as a dict, for ``cnn_apply``) and the ``layout``.
    """
    flat = {k: v.detach().clone() for k, v in _convert(params, config, True).items()}
    meta = {
        "format": FORMAT,
        "model": "cnn",
        "config": dataclasses.asdict(config) if config is not None else None,
        "layout": {"conv": "HWIO", "dense": "(in, out)", "input": "NHWC", "flatten": "NHWC"},
    }
    return files.write_bytes(path, st_save(flat, metadata={"hwr": json.dumps(meta)}))
