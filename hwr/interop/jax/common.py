"""What the JAX twins of the model families share: the ``Twin`` record, pytrees through DLPack, layout helpers on
torch tensors, and pure JAX layers in Flax layouts (NHWC activations, HWIO conv kernels, ``(in, out)`` dense kernels).

Every layer computes what its ``hwr.nn`` counterpart computes, in the same order where the order changes rounding
(batch norm's running statistics by ``lerp``, unbiased running variance; layer norm with ``eps=1e-5``; exact GELU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import torch
from torch.utils import _pytree

from hwr.interop.jax import random as jax_random
from hwr.tree import PyTree

__all__ = [
    "Named",
    "Twin",
    "batch_norm",
    "conv",
    "conv_blocks",
    "conv_from_flax",
    "conv_to_flax",
    "dense",
    "dropout",
    "dropout_keys",
    "from_jax",
    "layer_norm",
    "max_pool",
    "swap_rows",
    "to_jax",
]

Named = dict[str, torch.Tensor]  # dotted names -> tensors, as hwr.tree.flatten_names gives them


class Twin(NamedTuple):
    """A family's JAX twin: layout conversions on flattened names and the forward.

    ``to_flax(named, config)`` / ``from_flax(named, config)`` map hwr's dotted names and torch layouts to Flax's
    and back, exactly (permutations and reshapes only). ``forward(params, state, x, config, *, key, train,
    precision) -> (logits, state)`` mirrors ``model.apply`` on NHWC input. ``layout`` documents the file layout.
    """

    name: str
    config_cls: type
    to_flax: Callable[[Named, Any], Named]
    from_flax: Callable[[Named, Any], Named]
    forward: Callable[..., tuple[jax.Array, dict[str, Any]]]
    layout: dict[str, str]


# ---------------------------------------------------------------------------------------------- DLPack

_WIDE = (torch.float64, torch.int64, torch.uint64, torch.complex128)


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


# ---------------------------------------------------------------------------------------------- layouts (torch)


def conv_to_flax(k: torch.Tensor) -> torch.Tensor:
    """Conv kernel OIHW -> HWIO."""
    return k.permute(2, 3, 1, 0)


def conv_from_flax(k: torch.Tensor) -> torch.Tensor:
    """Conv kernel HWIO -> OIHW."""
    return k.permute(3, 2, 0, 1)


def swap_rows(k: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Rows of ``k`` ``(a*b, out)`` indexed ``(i, j)`` (``i < a`` outer) reordered as ``(j, i)``: a flattening of
    ``(A, B)`` features (NCHW's channel-major) turned into ``(B, A)`` (NHWC's channel-minor). ``swap_rows(., b, a)``
    inverts it."""
    out = k.shape[1]
    return k.reshape(a, b, out).transpose(0, 1).reshape(a * b, out)


# ---------------------------------------------------------------------------------------------- layers (JAX)


def conv(
    p: dict[str, jax.Array],
    x: jax.Array,
    *,
    stride: int = 1,
    padding: int | None = None,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """``(B, H, W, I) -> (B, H', W', O)`` with an HWIO kernel; ``padding=None`` is same padding (odd kernels)."""
    pad = p["kernel"].shape[0] // 2 if padding is None else padding
    y = jax.lax.conv_general_dilated(
        x,
        p["kernel"],
        (stride, stride),
        [(pad, pad), (pad, pad)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )
    return y + p["bias"] if "bias" in p else y


def dense(p: dict[str, jax.Array], x: jax.Array, precision: jax.lax.PrecisionLike = None) -> jax.Array:
    """``(..., in) -> (..., out)`` with an ``(in, out)`` kernel."""
    y = jnp.matmul(x, p["kernel"], precision=precision)
    return y + p["bias"] if "bias" in p else y


def classifier(params: dict[str, Any], x: jax.Array, precision: jax.lax.PrecisionLike = None) -> jax.Array:
    """``(B, F) -> (B, num_classes)`` as ``hwr.models.base.apply_head``: the hidden ReLU layer ``fc`` where the
    parameters have one, then ``head``."""
    if "fc" in params:
        x = jax.nn.relu(dense(params["fc"], x, precision))
    return dense(params["head"], x, precision)


def layer_norm(p: dict[str, jax.Array], x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Normalise the last axis, as ``nn.LayerNorm`` (eps 1e-5; Flax's default is 1e-6)."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _lerp(start: jax.Array, end: jax.Array, weight: float) -> jax.Array:
    return start + weight * (end - start) if weight < 0.5 else end - (end - start) * (1.0 - weight)  # torch.lerp


def batch_norm(
    p: dict[str, jax.Array],
    s: dict[str, jax.Array],
    x: jax.Array,
    *,
    train: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch norm over ``(B, H, W, C)`` -> ``(y, new_stats)``, as ``hwr.nn.batch_norm``: batch statistics in
    training (biased variance to normalise, unbiased for the running estimate, ``momentum`` as PyTorch's: the
    weight of the new batch), running statistics otherwise."""
    if not train:
        return (x - s["mean"]) * jax.lax.rsqrt(s["var"] + eps) * p["scale"] + p["bias"], s
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    n = x.size // x.shape[-1]
    y = (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]
    new = {
        "mean": _lerp(s["mean"], jax.lax.stop_gradient(mean), momentum),
        "var": _lerp(s["var"], jax.lax.stop_gradient(var) * (n / max(n - 1, 1)), momentum),
    }
    return y, new


def conv_blocks(
    params: dict[str, Any],
    state: dict[str, Any] | None,
    x: jax.Array,
    config: Any,
    *,
    pool: Callable[[int, jax.Array], jax.Array],
    train: bool,
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """hwr's conv stem (``hwr.models.cnn.stem``: ``block1..``, each ``conv1..`` [+ ``norm1..``]) over NHWC ``x``
    for a config with ``channels``, ``convs_per_block`` and ``norm`` (a cnn's or a crnn's): conv, batch norm,
    relu between convs, then ``relu(pool(block, x))``. Returns ``x`` and the new batch stats."""
    blocks, convs, bn = len(config.channels), config.convs_per_block, config.norm == "batch"
    if bn and state is None and not train:
        raise ValueError("batch norm in inference needs state= (running statistics); pass train=True for batch stats")
    new_state: dict[str, Any] = {}
    for b in range(1, blocks + 1):
        block = params[f"block{b}"]
        for j in range(1, convs + 1):
            x = conv(block[f"conv{j}"], x, precision=precision)  # (B, H, W, C_b)
            if bn:
                width = x.shape[-1]
                s = state[f"block{b}"][f"norm{j}"] if state else {"mean": jnp.zeros(width), "var": jnp.ones(width)}
                x, s = batch_norm(block[f"norm{j}"], s, x, train=train)
                new_state.setdefault(f"block{b}", {})[f"norm{j}"] = s
            if j < convs:
                x = jax.nn.relu(x)
        x = jax.nn.relu(pool(b, x))  # relu(pool(x)) == pool(relu(x))
    return x, new_state


def max_pool(x: jax.Array, size: int = 2) -> jax.Array:
    """``(B, H, W, C) -> (B, H/size, W/size, C)``, flooring as ``F.max_pool2d``."""
    window = (1, size, size, 1)
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")


def dropout(
    x: jax.Array,
    rate: float,
    *,
    key: jax.Array | None,
    train: bool,
    shape: tuple[int, ...] | None = None,
    to_x: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """``hwr.nn.dropout`` with an hwr key (``jax_random``): the same mask as hwr draws for the same key.

    hwr draws the mask in its own layout; where that differs from ``x``'s (NCHW against NHWC), pass hwr's
    ``shape`` and ``to_x``, the map from a mask of that shape to ``x``'s layout."""
    if not train or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout in training needs key=...; pass jax_random.from_hwr(key) or set dropout=0")
    keep = jax_random.uniform(key, x.shape if shape is None else shape) >= rate
    if to_x is not None:
        keep = to_x(keep)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def dropout_keys(key: jax.Array | None, n: int, rate: float, train: bool) -> list[jax.Array | None]:
    """``n`` keys split from ``key`` when dropout is live (as the hwr families split theirs), else ``None`` s."""
    if not train or rate == 0.0:
        return [None] * n
    if key is None:
        raise ValueError("dropout in training needs key=...; pass jax_random.from_hwr(key) or set dropout=0")
    return list(jax_random.split(key, n))
