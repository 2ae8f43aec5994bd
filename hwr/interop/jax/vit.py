"""The transformer family's JAX twin (``hwr.models.vit``).

Flax layout: the patch embedding a HWIO conv kernel ``(p, p, C, dim)``; ``cls`` ``(1, 1, dim)`` and ``pos``
``(1, T, dim)`` as they are (big_vision's shapes); layer norms ``scale``/``bias`` as they are (eps 1e-5, not Flax's
1e-6); attention in ``flax.linen.MultiHeadDotProductAttention``'s layout, hwr's packed ``qkv`` split into

    query, key, value: {"kernel": (dim, heads, dim/heads), "bias": (heads, dim/heads)}
    out:               {"kernel": (heads, dim/heads, dim), "bias": (dim,)}

and the MLP's dense kernels ``(in, out)``. Patches are taken from NHWC input in the same row-major order.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import torch

from hwr.interop.jax import common as jc
from hwr.interop.jax import random as jax_random
from hwr.models.vit import ViTConfig

__all__ = ["TWIN", "attention", "block", "convert_from_flax", "convert_to_flax", "forward", "from_flax", "to_flax"]

LAYOUT = {
    "conv": "HWIO",
    "dense": "(in, out)",
    "input": "NHWC",
    "attention": "flax MultiHeadDotProductAttention: query/key/value (dim, heads, head_dim), out (heads, head_dim, dim)",
    "embeddings": "cls (1, 1, dim), pos (1, tokens, dim)",
}
_QKV = ("query", "key", "value")


def to_flax(named: jc.Named, config: ViTConfig) -> jc.Named:
    """hwr names and torch layouts -> Flax layouts."""
    return convert_to_flax(named, config.heads, config.dim)


def from_flax(named: jc.Named, config: ViTConfig) -> jc.Named:
    """Inverse of ``to_flax``."""
    return convert_from_flax(named, config.dim)


def convert_to_flax(named: jc.Named, heads: int, d: int) -> jc.Named:
    """Transformer parameters (``*.attn.qkv``, ``*.attn.out``, convs, dense, norms) of width ``d`` -> Flax."""
    out = {}
    for name, t in named.items():
        prefix, _, part = name.rpartition(".")
        if prefix.endswith("attn.qkv"):
            base = prefix[: -len("qkv")]
            for which, chunk in zip(_QKV, t.chunk(3, 0), strict=True):  # rows: query, key, value
                chunk = chunk.T.reshape(d, heads, d // heads) if part == "kernel" else chunk.reshape(heads, -1)
                out[f"{base}{which}.{part}"] = chunk.contiguous()
            continue
        if prefix.endswith("attn.out") and part == "kernel":
            t = t.T.reshape(heads, d // heads, d)
        elif part == "kernel" and t.ndim == 4:
            t = jc.conv_to_flax(t)
        elif part == "kernel":
            t = t.T
        out[name] = t.contiguous()
    return out


def convert_from_flax(named: jc.Named, d: int) -> jc.Named:
    """Inverse of ``convert_to_flax``."""
    out: jc.Named = {}
    for name, t in named.items():
        prefix, _, part = name.rpartition(".")
        head, _, which = prefix.rpartition(".")
        if head.endswith("attn") and which in _QKV:
            if which != "query":
                continue  # gathered with the query
            parts = [named[f"{head}.{w}.{part}"] for w in _QKV]
            parts = [p.reshape(d, d).T if part == "kernel" else p.reshape(d) for p in parts]
            out[f"{head}.qkv.{part}"] = torch.cat(parts, 0).contiguous()
            continue
        if prefix.endswith("attn.out") and part == "kernel":
            t = t.reshape(d, d).T
        elif part == "kernel" and t.ndim == 4:
            t = jc.conv_from_flax(t)
        elif part == "kernel":
            t = t.T
        out[name] = t.contiguous()
    return out


# ---------------------------------------------------------------------------------------------- forward


def attention(p: dict[str, Any], x: jax.Array, precision: jax.lax.PrecisionLike = None) -> jax.Array:
    """Multi-head self-attention ``(B, T, D) -> (B, T, D)`` in Flax's layout, as ``hwr.nn.multi_head_attention``."""
    q, k, v = (jnp.einsum("btd,dhk->bthk", x, p[w]["kernel"], precision=precision) + p[w]["bias"] for w in _QKV)
    scores = jnp.einsum("bqhk,bthk->bhqt", q, k, precision=precision) / math.sqrt(q.shape[-1])  # (B, h, T, T)
    y = jnp.einsum("bhqt,bthk->bqhk", jax.nn.softmax(scores, axis=-1), v, precision=precision)  # (B, T, h, D/h)
    return jnp.einsum("bqhk,hkd->bqd", y, p["out"]["kernel"], precision=precision) + p["out"]["bias"]


def block(
    p: dict[str, Any],
    x: jax.Array,
    *,
    dropout: float = 0.0,
    key: jax.Array | None = None,
    train: bool = False,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """Pre-norm block ``(B, T, dim) -> (B, T, dim)``; ``key`` splits into the three dropouts as in ``hwr``."""
    live = train and dropout > 0.0 and key is not None
    ks: list[jax.Array | None] = list(jax_random.split(key, 3)) if live else [None] * 3
    a = attention(p["attn"], jc.layer_norm(p["norm1"], x), precision)
    x = x + jc.dropout(a, dropout, key=ks[0], train=train)
    h = jax.nn.gelu(jc.dense(p["mlp"]["fc1"], jc.layer_norm(p["norm2"], x), precision), approximate=False)
    h = jc.dense(p["mlp"]["fc2"], jc.dropout(h, dropout, key=ks[1], train=train), precision)
    return x + jc.dropout(h, dropout, key=ks[2], train=train)


def forward(
    params: dict[str, Any],
    state: dict[str, Any] | None,
    x: jax.Array,
    config: ViTConfig,
    *,
    key: jax.Array | None = None,
    train: bool = False,
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """``x`` float ``(B, H, W, C)`` -> logits ``(B, num_classes)`` and ``{}``, as ``hwr.models.vit``'s apply."""
    c = config
    keys = jc.dropout_keys(key, c.depth + 1, c.dropout, train)
    embed = params["embed"]
    x = jc.conv(embed["patch"], x, stride=c.patch_size, padding=0, precision=precision)  # (B, H/p, W/p, dim)
    n = x.shape[0]
    x = x.reshape(n, -1, c.dim)  # (B, N, dim), patches row-major
    if c.pool == "cls":
        x = jnp.concatenate([jnp.broadcast_to(embed["cls"], (n, 1, c.dim)), x], axis=1)  # (B, N+1, dim)
    x = jc.dropout(x + embed["pos"], c.dropout, key=keys[0], train=train)
    for i in range(1, c.depth + 1):
        x = block(params[f"block{i}"], x, dropout=c.dropout, key=keys[i], train=train, precision=precision)
    x = jc.layer_norm(params["norm"], x)
    x = x[:, 0] if c.pool == "cls" else x.mean(axis=1)  # (B, dim)
    return jc.classifier(params, x, precision), {} if state is None else state


TWIN = jc.Twin("vit", ViTConfig, to_flax, from_flax, forward, LAYOUT)
