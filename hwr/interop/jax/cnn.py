"""The CNN family's JAX twin (``hwr.models.cnn``).

Flax layout: conv kernels HWIO, dense kernels ``(in, out)``, batch-norm ``scale``/``bias`` as they are (their
running ``mean``/``var`` are Flax's ``batch_stats``, unchanged). The first dense layer after flattening has its
input rows reordered from NCHW flattening ``(c, h, w)`` to NHWC's ``(h, w, c)``, so the forward flattens NHWC maps.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from hwr.interop.jax import common as jc
from hwr.models.cnn import CNNConfig

__all__ = ["TWIN", "forward", "from_flax", "infer_config", "to_flax"]

LAYOUT = {
    "conv": "HWIO",
    "dense": "(in, out)",
    "input": "NHWC",
    "flatten": "NHWC",
    "batch_stats": "mean, var (PyTorch momentum 0.1, unbiased running var)",
}


def _first_dense(named: jc.Named) -> str | None:
    return next((k for k, v in named.items() if k.endswith("kernel") and v.ndim == 2), None)


def infer_config(named: jc.Named, *, flax_layout: bool) -> CNNConfig:
    """The ``CNNConfig`` these parameters belong to, from their shapes (square maps, the image side a multiple of
    ``2**blocks``); raises when the flattened map cannot be factored, naming the fix."""
    blocks = sorted({k.split(".")[0] for k in named if k.startswith("block")}, key=lambda b: int(b[5:]))
    convs = [k for k in named if k.startswith("block1.conv") and k.endswith("kernel")]
    last = named[f"{blocks[-1]}.conv{len(convs)}.kernel"] if blocks and convs else None
    first_dense = _first_dense(named)
    if last is None or first_dense is None:
        raise ValueError(f"not CNN parameters (names {sorted(named)[:4]}...); pass config= for other families")
    o_axis, i_axis = (3, 2) if flax_layout else (0, 1)
    channels = tuple(int(named[f"{b}.conv1.kernel"].shape[o_axis]) for b in blocks)
    fc = named[first_dense]
    in_features = int(fc.shape[0] if flax_layout else fc.shape[1])
    ch = channels[-1]
    side = math.isqrt(in_features // ch) if in_features % ch == 0 else 0
    if side * side * ch != in_features:
        raise ValueError(
            f"cannot infer the flattened feature map: {first_dense} takes {in_features} inputs, not C*S*S with C={ch} "
            "from the last conv; pass config=CNNConfig(...) of the model these parameters belong to"
        )
    head = named["head.kernel"]
    hidden = 0 if first_dense.startswith("head") else int(fc.shape[1] if flax_layout else fc.shape[0])
    return CNNConfig(
        channels=channels,
        convs_per_block=len(convs),
        kernel_size=int(last.shape[0 if flax_layout else 2]),
        hidden=hidden,
        norm="batch" if "block1.norm1.scale" in named else "none",
        num_classes=int(head.shape[1] if flax_layout else head.shape[0]),
        in_channels=int(named["block1.conv1.kernel"].shape[i_axis]),
        image_size=side << len(blocks),
    )


def _convert(named: jc.Named, c: CNNConfig, to_flax_layout: bool) -> jc.Named:
    first_dense = _first_dense(named)
    ch, side = c.channels[-1], c.feature_size
    out = {}
    for name, t in named.items():
        if name.endswith("kernel") and t.ndim == 4:
            t = jc.conv_to_flax(t) if to_flax_layout else jc.conv_from_flax(t)
        elif name == first_dense and to_flax_layout:  # (out, C*S*S) -> (S*S*C, out)
            t = jc.swap_rows(t.T, ch, side * side)
        elif name == first_dense:  # (S*S*C, out) -> (out, C*S*S)
            t = jc.swap_rows(t, side * side, ch).T
        elif name.endswith("kernel") and t.ndim == 2:
            t = t.T
        out[name] = t.contiguous()
    return out


def to_flax(named: jc.Named, config: CNNConfig) -> jc.Named:
    """hwr names and torch layouts -> the same names in Flax layouts."""
    return _convert(named, config, True)


def from_flax(named: jc.Named, config: CNNConfig) -> jc.Named:
    """Inverse of ``to_flax``."""
    return _convert(named, config, False)


def forward(
    params: dict[str, Any],
    state: dict[str, Any] | None,
    x: jax.Array,
    config: CNNConfig,
    *,
    key: jax.Array | None = None,
    train: bool = False,
    precision: jax.lax.PrecisionLike = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """``x`` float ``(B, H, W, C)`` -> logits ``(B, num_classes)`` and the new batch stats, as
    ``hwr.models.cnn``'s apply (``key``: an hwr key as ``jax_random`` makes, for dropout)."""
    c = config
    x, new_state = jc.conv_blocks(
        params, state, x, c, pool=lambda b, y: jc.max_pool(y), train=train, precision=precision
    )  # (B, S, S, C)
    n, h, w, ch = x.shape
    x = x.reshape(n, -1)  # (B, S*S*C), NHWC order
    hwr_shape, to_x = None, None
    if c.hidden:
        x = jax.nn.relu(jc.dense(params["fc"], x, precision))  # (B, hidden)
    else:  # hwr draws the mask over its NCHW flattening
        hwr_shape, to_x = (n, ch, h, w), lambda m: m.transpose(0, 2, 3, 1).reshape(n, -1)
    x = jc.dropout(x, c.dropout, key=key, train=train, shape=hwr_shape, to_x=to_x)
    return jc.dense(params["head"], x, precision), new_state  # (B, num_classes)


TWIN = jc.Twin("cnn", CNNConfig, to_flax, from_flax, forward, LAYOUT)
