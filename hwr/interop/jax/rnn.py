"""The recurrent family's JAX twin (``hwr.models.rnn``): GRU or LSTM layers, uni- or bidirectional, over rows or
conv-stem columns, under ``jax.lax.scan``.

Flax layout, per cell, in the names of Flax's ``GRUCell`` / ``OptimizedLSTMCell`` with one gate per dense layer
(hwr packs the gates as PyTorch does: rows ``r, z, n`` of ``(3H, in)``, ``i, f, g, o`` of ``(4H, in)``):

    GRU:  ir, iz, in: {"kernel": (in, H), "bias": (H,)};  hr, hz, hn: {"kernel": (H, H), "bias": (H,)}
    LSTM: ii, if, ig, io: {"kernel": (in, H), "bias": (H,)};  hi, hf, hg, ho: {"kernel": (H, H), "bias": (H,)}

Every dense keeps its bias, so the conversion is exact; Flax's cells have one bias per gate (``GRUCell``: none on
``hr``/``hz``; ``OptimizedLSTMCell``: none on ``i*``): fold hwr's two into one to load a cell (``hr.bias`` into
``ir.bias``, ``hz.bias`` into ``iz.bias``; ``i*.bias`` into ``h*.bias``), as ``flax_cell`` does. ``hn.bias``
stays inside the reset gate's product, as in both PyTorch and Flax.

The sequence is read from NHWC input with NHWC's flattening: rows give ``(w, c)`` features per step and the stem's
columns ``(h, s)`` (hwr's are ``(c, w)`` and ``(s, h)``), so the first layer's input kernels have their rows
reordered to match.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import torch

from hwr.interop.jax import common as jc
from hwr.models.rnn import RNNConfig

__all__ = [
    "TWIN",
    "cells_from_flax",
    "cells_to_flax",
    "direction",
    "encode",
    "flax_cell",
    "forward",
    "from_flax",
    "sequence",
    "to_flax",
]

LAYOUT = {
    "conv": "HWIO",
    "dense": "(in, out)",
    "input": "NHWC",
    "cell": "one (in, H) / (H, H) dense per gate with its bias: GRU ir iz in hr hz hn, LSTM ii if ig io hi hf hg ho",
    "sequence": "rows: (w, c) features per row; conv: (h, s) features per column",
}


def _grid(c: RNNConfig) -> tuple[int, int]:
    """hwr's per-step features as an ``(A, B)`` grid, A outer: rows ``(C, W)``, stem columns ``(S, H/2)``."""
    return (c.in_channels, c.image_size) if c.reader == "rows" else (c.stem_channels, c.image_size // 2)


def _other(name: str, t: torch.Tensor, to_flax_layout: bool) -> torch.Tensor:
    if name.endswith("kernel") and t.ndim == 4:
        return jc.conv_to_flax(t) if to_flax_layout else jc.conv_from_flax(t)
    return t.T if name.endswith("kernel") else t


def cells_to_flax(named: jc.Named, cell: str, grid: tuple[int, int] | None) -> jc.Named:
    """Recurrent layers (``layerN.{fwd,bwd}.{ih,hh}.*``), packed gates -> a dense per gate; ``grid`` ``(A, B)``:
    layer 1's input features in hwr's ``(A, B)`` order become NHWC's ``(B, A)``."""
    gates = "rzn" if cell == "gru" else "ifgo"
    out = {}
    for name, t in named.items():
        layer, direction, which, part = name.split(".")  # which: "ih" | "hh"
        for g, chunk in zip(gates, t.chunk(len(gates), 0), strict=True):
            if part == "kernel":
                chunk = chunk.T  # (in, H)
                if layer == "layer1" and which == "ih" and grid:
                    chunk = jc.swap_rows(chunk, *grid)
            out[f"{layer}.{direction}.{which[0]}{g}.{part}"] = chunk.contiguous()
    return out


def cells_from_flax(named: jc.Named, cell: str, grid: tuple[int, int] | None) -> jc.Named:
    """Inverse of ``cells_to_flax``."""
    gates = "rzn" if cell == "gru" else "ifgo"
    cells: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in named.items():
        layer, direction, gate, part = name.split(".")
        cells.setdefault(f"{layer}.{direction}.{gate[0]}h.{part}", {})[gate[1:]] = t
    out: jc.Named = {}
    for name, by_gate in cells.items():
        missing = [g for g in gates if g not in by_gate]
        if missing:
            raise KeyError(f"{name}: gates {missing} missing; a {cell} cell needs {list(gates)}")
        chunks = []
        for g in gates:
            t = by_gate[g]
            if name.endswith("kernel"):
                if name.startswith("layer1.") and ".ih." in name and grid:
                    t = jc.swap_rows(t, grid[1], grid[0])
                t = t.T  # (H, in)
            chunks.append(t)
        out[name] = torch.cat(chunks, 0).contiguous()
    return out


def to_flax(named: jc.Named, config: RNNConfig) -> jc.Named:
    """hwr names and torch layouts (packed gates) -> Flax layouts (one dense per gate)."""
    out = {k: _other(k, t, True).contiguous() for k, t in named.items() if not k.startswith("layer")}
    layers = {k: t for k, t in named.items() if k.startswith("layer")}
    return {**out, **cells_to_flax(layers, config.cell, _grid(config))}


def from_flax(named: jc.Named, config: RNNConfig) -> jc.Named:
    """Inverse of ``to_flax``."""
    out = {k: _other(k, t, False).contiguous() for k, t in named.items() if not k.startswith("layer")}
    layers = {k: t for k, t in named.items() if k.startswith("layer")}
    return {**out, **cells_from_flax(layers, config.cell, _grid(config))}


def flax_cell(cell: dict[str, Any], kind: str) -> dict[str, Any]:
    """One cell of these parameters (``params["layer1"]["fwd"]``) as the params of ``flax.linen.GRUCell``
    (``kind="gru"``) or ``OptimizedLSTMCell`` (``"lstm"``): the two biases of each gate folded into the one
    Flax keeps. Same function, not invertible (``from_flax`` needs the biases apart)."""
    out = {k: {"kernel": v["kernel"]} for k, v in cell.items()}
    if kind == "gru":
        out["ir"]["bias"] = cell["ir"]["bias"] + cell["hr"]["bias"]
        out["iz"]["bias"] = cell["iz"]["bias"] + cell["hz"]["bias"]
        out["in"]["bias"], out["hn"]["bias"] = cell["in"]["bias"], cell["hn"]["bias"]
    elif kind == "lstm":
        for g in "ifgo":
            out[f"h{g}"]["bias"] = cell[f"i{g}"]["bias"] + cell[f"h{g}"]["bias"]
    else:
        raise ValueError(f"kind must be 'gru' or 'lstm', got {kind!r}")
    return out


# ---------------------------------------------------------------------------------------------- forward


def _packed(p: dict[str, Any], side: str, gates: str) -> tuple[jax.Array, jax.Array]:
    kernel = jnp.concatenate([p[f"{side}{g}"]["kernel"] for g in gates], axis=1)  # (in, G*H)
    return kernel, jnp.concatenate([p[f"{side}{g}"]["bias"] for g in gates])


def direction(
    cell: str, p: dict[str, Any], x: jax.Array, reverse: bool, precision: jax.lax.PrecisionLike
) -> tuple[jax.Array, jax.Array]:
    """One direction over ``x`` ``(B, T, in)`` -> ``(outputs (B, T, H), final h (B, H))``, as ``hwr.nn.gru`` /
    ``lstm``; ``reverse`` reads ``T-1 .. 0`` with outputs aligned to the input positions."""
    gates = "rzn" if cell == "gru" else "ifgo"
    wi, bi = _packed(p, "i", gates)
    wh, bh = _packed(p, "h", gates)
    xs = jnp.swapaxes(jnp.matmul(x, wi, precision=precision) + bi, 0, 1)  # (T, B, G*H), all steps at once
    hidden = wh.shape[0]
    h0 = jnp.zeros((x.shape[0], hidden), x.dtype)

    def gru_step(h: jax.Array, xt: jax.Array) -> tuple[jax.Array, jax.Array]:
        xr, xz, xn = jnp.split(xt, 3, axis=-1)
        hr, hz, hn = jnp.split(jnp.matmul(h, wh, precision=precision) + bh, 3, axis=-1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = n + z * (h - n)  # (1 - z) * n + z * h
        return h, h

    def lstm_step(hc: tuple[jax.Array, jax.Array], xt: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        h, c = hc
        i, f, g, o = jnp.split(xt + jnp.matmul(h, wh, precision=precision) + bh, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    if cell == "gru":
        last, ys = jax.lax.scan(gru_step, h0, xs, reverse=reverse)
    else:
        (last, _c), ys = jax.lax.scan(lstm_step, (h0, h0), xs, reverse=reverse)
    return jnp.swapaxes(ys, 0, 1), last


def encode(
    params: dict[str, Any],
    h: jax.Array,
    cell: str,
    num_layers: int,
    bidirectional: bool,
    *,
    dropout: float = 0.0,
    keys: list[jax.Array | None] | None = None,
    train: bool = False,
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, jax.Array]:
    """The layer stack over ``h`` ``(B, T, F)`` -> top outputs ``(B, T, dirs*H)`` and final states ``(B, dirs*H)``,
    as ``hwr.models.rnn.encode``; ``keys[i]`` drives the dropout after layer ``i+1``."""
    keys = keys or [None] * num_layers
    for i in range(1, num_layers + 1):
        layer = params[f"layer{i}"]
        ys, last = direction(cell, layer["fwd"], h, False, precision)  # (B, T, H), (B, H)
        if bidirectional:
            ys_b, last_b = direction(cell, layer["bwd"], h, True, precision)
            ys, last = jnp.concatenate([ys, ys_b], -1), jnp.concatenate([last, last_b], -1)
        h = ys
        if i < num_layers:
            h = jc.dropout(h, dropout, key=keys[i - 1], train=train)
    return h, last


def sequence(params: dict[str, Any], x: jax.Array, c: RNNConfig, precision: jax.lax.PrecisionLike = None) -> jax.Array:
    """NHWC images ``(B, H, W, C)`` -> ``(B, steps, features)`` by ``c.reader``, NHWC-flattened."""
    n = x.shape[0]
    if c.reader == "rows":
        return x.reshape(n, x.shape[1], -1)  # (B, H, W*C)
    y = jc.max_pool(jax.nn.relu(jc.conv(params["stem"]["conv1"], x, precision=precision)))  # (B, H/2, W/2, S)
    return jnp.swapaxes(y, 1, 2).reshape(n, y.shape[2], -1)  # (B, W/2, H/2*S): columns, left to right


def forward(
    params: dict[str, Any],
    state: dict[str, Any] | None,
    x: jax.Array,
    config: RNNConfig,
    *,
    key: jax.Array | None = None,
    train: bool = False,
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """``x`` float ``(B, H, W, C)`` -> logits ``(B, num_classes)`` and ``{}``, as ``hwr.models.rnn``'s apply;
    ``key`` (an hwr key, ``jax_random``) drives the dropouts exactly as hwr's key does."""
    c = config
    keys = jc.dropout_keys(key, c.num_layers + 1, c.dropout, train)
    h, last = encode(
        params,
        sequence(params, x, c, precision),
        c.cell,
        c.num_layers,
        c.bidirectional,
        dropout=c.dropout,
        keys=keys[:-1],
        train=train,
        precision=precision,
    )  # (B, T, dirs*H)
    feats = last if c.readout == "last" else h.mean(axis=1)  # (B, dirs*H)
    feats = jc.dropout(feats, c.dropout, key=keys[-1], train=train)
    return jc.classifier(params, feats, precision), {} if state is None else state


TWIN = jc.Twin("rnn", RNNConfig, to_flax, from_flax, forward, LAYOUT)
