"""The CRNN family's JAX twin (``hwr.models.crnn``): conv blocks, columns, a GRU/LSTM or transformer encoder,
per-column logits ``(B, T, num_classes + 1)`` for CTC.

Flax layout: the blocks as the CNN's (HWIO kernels, batch-norm ``scale``/``bias``, statistics as ``batch_stats``),
recurrent layers as ``jax_rnn``'s (a dense per gate), transformer layers as ``jax_vit``'s blocks
(``MultiHeadDotProductAttention`` layout), dense kernels ``(in, out)``. Columns are read from NHWC maps with NHWC's
flattening, ``(h, c)`` features per column (hwr's are ``(c, h)``), so the first layer reading them (``proj``, or
the first recurrent layer's input kernels) has its rows reordered. Pools round up (``ceil_mode``) as hwr's.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from hwr.interop.jax import common as jc
from hwr.interop.jax import rnn as jax_rnn
from hwr.interop.jax import vit as jax_vit
from hwr.models.crnn import CRNNConfig

__all__ = ["TWIN", "forward", "from_flax", "sinusoids", "to_flax"]

LAYOUT = {
    "conv": "HWIO",
    "dense": "(in, out)",
    "input": "NHWC (B, height, W, C)",
    "columns": "(h, c) features",
    "cell": jax_rnn.LAYOUT["cell"],
    "attention": jax_vit.LAYOUT["attention"],
    "batch_stats": "mean, var (PyTorch momentum 0.1, unbiased running var)",
}


def _grid(c: CRNNConfig) -> tuple[int, int]:
    """hwr's column features as ``(channels, rows)``, channel-major."""
    return c.channels[-1], c.features // c.channels[-1]


def _split(named: jc.Named) -> tuple[jc.Named, jc.Named]:
    layers = {k: t for k, t in named.items() if k.startswith("layer")}
    return layers, {k: t for k, t in named.items() if not k.startswith("layer")}


def to_flax(named: jc.Named, config: CRNNConfig) -> jc.Named:
    """hwr names and torch layouts -> Flax layouts."""
    c, layers, rest = config, *_split(named)
    out = {}
    for name, t in rest.items():
        if name.endswith("kernel") and t.ndim == 4:
            t = jc.conv_to_flax(t)
        elif name == "proj.kernel":
            t = jc.swap_rows(t.T, *_grid(c))
        elif name.endswith("kernel"):
            t = t.T
        out[name] = t.contiguous()
    if c.encoder == "transformer":
        return {**out, **jax_vit.convert_to_flax(layers, c.heads, c.hidden)}
    return {**out, **jax_rnn.cells_to_flax(layers, c.encoder, None if "proj.kernel" in named else _grid(c))}


def from_flax(named: jc.Named, config: CRNNConfig) -> jc.Named:
    """Inverse of ``to_flax``."""
    c, layers, rest = config, *_split(named)
    out = {}
    for name, t in rest.items():
        if name.endswith("kernel") and t.ndim == 4:
            t = jc.conv_from_flax(t)
        elif name == "proj.kernel":
            t = jc.swap_rows(t, _grid(c)[1], _grid(c)[0]).T
        elif name.endswith("kernel"):
            t = t.T
        out[name] = t.contiguous()
    if c.encoder == "transformer":
        return {**out, **jax_vit.convert_from_flax(layers, c.hidden)}
    return {**out, **jax_rnn.cells_from_flax(layers, c.encoder, None if "proj.kernel" in named else _grid(c))}


# ---------------------------------------------------------------------------------------------- forward


def sinusoids(t: int, dim: int) -> jax.Array:
    """``hwr.models.crnn.sinusoids`` ``(t, dim)``: sines in the even features, cosines in the odd ones."""
    pos = jnp.arange(t, dtype=jnp.float32)[:, None]
    freq = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))
    return jnp.stack([jnp.sin(pos * freq), jnp.cos(pos * freq)], axis=-1).reshape(t, -1)[:, :dim]


def _pool_ceil(x: jax.Array, ph: int, pw: int) -> jax.Array:
    """Max pool ``(ph, pw)`` with stride = kernel over NHWC, rounding the output size up (``ceil_mode=True``)."""
    pad = [(0, 0), (0, -x.shape[1] % ph), (0, -x.shape[2] % pw), (0, 0)]
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, ph, pw, 1), (1, ph, pw, 1), pad)


def forward(
    params: dict[str, Any],
    state: dict[str, Any] | None,
    x: jax.Array,
    config: CRNNConfig,
    *,
    key: jax.Array | None = None,
    train: bool = False,
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """``x`` float ``(B, height, W, C)`` -> logits ``(B, frames(W), num_classes + 1)`` and the new batch stats,
    as ``hwr.models.crnn``'s apply."""
    c = config
    keys = jc.dropout_keys(key, c.num_layers + 1, c.dropout, train)
    x, new_state = jc.conv_blocks(
        params,
        state,
        x,
        c,
        pool=lambda b, y: _pool_ceil(y, 2, 2 if b <= c.width_pools else 1),
        train=train,
        precision=precision,
    )  # (B, H_N, T, C_N)
    n, _h, w, _c = x.shape
    seq = jnp.swapaxes(x, 1, 2).reshape(n, w, -1)  # (B, T, H*C): columns, left to right
    if "proj" in params:
        seq = jc.dense(params["proj"], seq, precision)
    if c.encoder == "transformer":
        seq = seq + sinusoids(seq.shape[1], c.hidden)
        for i in range(1, c.num_layers + 1):
            seq = jax_vit.block(
                params[f"layer{i}"], seq, dropout=c.dropout, key=keys[i - 1], train=train, precision=precision
            )
        seq = jc.layer_norm(params["norm"], seq)
    else:
        seq, _ = jax_rnn.encode(
            params,
            seq,
            c.encoder,
            c.num_layers,
            c.bidirectional,
            dropout=c.dropout,
            keys=keys[:-1],
            train=train,
            precision=precision,
        )  # (B, T, dirs*hidden)
    seq = jc.dropout(seq, c.dropout, key=keys[-1], train=train)
    return jc.dense(params["head"], seq, precision), new_state  # (B, T, num_classes + 1)


TWIN = jc.Twin("crnn", CRNNConfig, to_flax, from_flax, forward, LAYOUT)
