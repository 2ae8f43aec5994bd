"""The convolutional-recurrent family (CRNN, Shi et al. 2016) for strings: per-column class scores for CTC.

    blocks 1..N: conv [+ batch norm] (relu between convs), maxpool, relu   as the digit CNN's blocks
        block i <= width_pools pools 2x2, later blocks pool the height only (2x1)
        (B, 1, 32, W) -> (B, C_N, 32 / 2^N, W / 2^width_pools)
    columns: (B, T, C_N * H_N), T = W / 2^width_pools, left to right
    [proj: linear -> hidden]                                   (always for the transformer)
    encoder "gru" | "lstm": num_layers x (forward [+ backward]) hwr.nn.gru / lstm, as nn.GRU / nn.LSTM
    encoder "transformer": sinusoidal positions, num_layers pre-norm blocks of hwr.models.vit
    dropout -> head                                            (B, T, num_classes + 1)

The blank is the last class (index ``num_classes``), so class ``d`` is the digit ``d``. The width is free (a
multiple of ``2^width_pools`` wastes nothing); frames past an image's content are masked by the caller (CTC input
lengths ``frames(width)``).

Parameters: ``{"block1": {"conv1": {"kernel"[, "bias"]}[, "norm1"]}, ..., ["proj"], "layer1" .. "layerN",
"head"}``; the blocks are named and shaped as ``hwr.models.cnn``'s with the same channels, so a trained digit
CNN's convolutions (and batch-norm statistics) transfer by name and shape (``hwr.tasks.digits.finetune.transfer``). A GRU/LSTM
layer is ``{"fwd": cell, "bwd": cell}`` as in ``hwr.models.rnn``; a transformer layer is ``hwr.models.vit``'s block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from hwr import nn, random, tree
from hwr.models import rnn, vit
from hwr.models.base import Model, dropout_keys
from hwr.models.cnn import init_stem, init_stem_state, stem
from hwr.random import Key

__all__ = ["CRNNConfig", "check_strings_input", "model", "sinusoids"]


@dataclass(frozen=True)
class CRNNConfig:
    """Architecture of a CRNN. Defaults: 32-64-128 conv blocks with batch norm (height 32 -> 4, width / 4), one
    bidirectional GRU layer of 128 per direction over 512 column features, 10 digit classes + blank."""

    channels: tuple[int, ...] = (32, 64, 128)
    convs_per_block: int = 1
    kernel_size: int = 3
    norm: str = "batch"  # "batch" | "none"
    width_pools: int = 2  # the first blocks that also halve the width; the frame stride is 2**width_pools
    encoder: str = "gru"  # "gru" | "lstm" | "transformer"
    hidden: int = 128  # per direction (rnn) or model width (transformer)
    num_layers: int = 1
    bidirectional: bool = True  # rnn only; the transformer always sees both sides
    proj: int = 0  # rnn: project column features to this width first (0: no projection)
    heads: int = 4
    mlp_dim: int = 256
    dropout: float = 0.0
    num_classes: int = 10  # labels; logits have one more (the blank, last)
    in_channels: int = 1
    height: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {self.channels}")
        if self.norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {self.norm!r}")
        if self.encoder not in ("gru", "lstm", "transformer"):
            raise ValueError(f"encoder must be 'gru', 'lstm' or 'transformer', got {self.encoder!r}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {self.kernel_size}")
        if not 0 <= self.width_pools <= len(self.channels):
            raise ValueError(
                f"width_pools must be in [0, {len(self.channels)}] (the number of blocks), got {self.width_pools}"
            )
        for name in ("convs_per_block", "hidden", "num_layers", "heads", "mlp_dim", "num_classes", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)}")
        if self.proj < 0:
            raise ValueError(f"proj must be >= 0 (0: none), got {self.proj}")
        if self.height >> len(self.channels) < 1:
            raise ValueError(f"{len(self.channels)} blocks halve height {self.height} to nothing; use fewer blocks")
        if self.encoder == "transformer" and self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def blank(self) -> int:
        """The blank's class index: the last."""
        return self.num_classes

    @property
    def stride(self) -> int:
        """Input pixels per output frame."""
        return 2**self.width_pools

    def frames(self, width: int | torch.Tensor) -> int | torch.Tensor:
        """Output frames for an input ``width`` (int or tensor of content widths): the pooled width, at least 1
        for a content width of at least one pixel."""
        if isinstance(width, torch.Tensor):
            return torch.div(width + self.stride - 1, self.stride, rounding_mode="floor")
        return -(-width // self.stride)

    @property
    def features(self) -> int:
        """Features per column after the stem."""
        return self.channels[-1] * (self.height >> len(self.channels))

    @property
    def encoder_width(self) -> int:
        if self.encoder == "transformer":
            return self.hidden
        return self.hidden * (2 if self.bidirectional else 1)

    def rnn_config(self) -> rnn.RNNConfig:
        """The ``hwr.models.rnn`` layer stack this encoder runs (``rnn.encode``)."""
        return rnn.RNNConfig(
            cell=self.encoder,
            hidden=self.hidden,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
        )


def check_strings_input(x: torch.Tensor, channels: int, height: int, min_width: int) -> None:
    """Raise a clear error unless ``x`` is float ``(B, channels, height, W)`` with ``W >= min_width``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"model input must be a float tensor (B, {channels}, {height}, W), got "
            f"{getattr(x, 'dtype', type(x).__name__)}; convert uint8 images with x.float() / 255"
        )
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] != height or x.shape[3] < min_width:
        raise ValueError(
            f"model input must have shape (B, {channels}, {height}, W) with W >= {min_width}, got "
            f"{tuple(x.shape)}; height-normalise string images with hwr.tasks.strings.training.normalise_string"
        )


def sinusoids(t: int, dim: int, *, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal position encodings ``(t, dim)`` (Vaswani et al. 2017): sines in the even features, cosines in
    the odd ones, wavelengths from 2 pi to 10000 * 2 pi."""
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).flatten(1)[:, :dim]
    return pe.to(dtype)


def _pool(block: int, c: CRNNConfig) -> tuple[int, int]:
    return (2, 2) if block <= c.width_pools else (2, 1)


def _init(c: CRNNConfig, key: Key) -> dict[str, Any]:
    """The parameters of ``c``'s CRNN from ``key`` (on its device)."""
    device = key.device
    k_stem, k_proj, k_layers, k_head = random.split(key, 4)
    params = init_stem(random.split(k_stem, len(c.channels) * c.convs_per_block), c)
    width = c.features
    if c.encoder == "transformer" or c.proj:
        out = c.hidden if c.encoder == "transformer" else c.proj
        params["proj"] = nn.init_linear(k_proj, width, out)
        width = out
    layer_keys = random.split(k_layers, 2 * c.num_layers)
    for n in range(c.num_layers):
        if c.encoder == "transformer":
            layer = vit.init_block(layer_keys[2 * n], c.hidden, c.mlp_dim)
        else:
            init_cell = nn.init_gru if c.encoder == "gru" else nn.init_lstm
            layer = {"fwd": init_cell(layer_keys[2 * n], width, c.hidden)}
            if c.bidirectional:
                layer["bwd"] = init_cell(layer_keys[2 * n + 1], width, c.hidden)
        params[f"layer{n + 1}"] = layer
        width = c.encoder_width
    if c.encoder == "transformer":
        params["norm"] = nn.init_layer_norm(c.hidden)
    params["head"] = nn.init_linear(k_head, width, c.num_classes + 1)
    # the few constants the shared initialisers make on the default device follow the key
    return tree.map(lambda t: t.to(device), params)


def model(config: CRNNConfig = CRNNConfig()) -> Model:
    """Build the pure CRNN for ``config``."""
    c = config

    def init(key: Key) -> dict[str, Any]:
        return _init(c, key)

    def init_state(device: torch.device | str | None = None) -> dict[str, Any]:
        return init_stem_state(c, device)

    def apply(
        params: dict[str, Any],
        state: dict[str, Any],
        x: torch.Tensor,
        *,
        key: Key | None = None,
        train: bool = False,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """``x``: float ``(B, in_channels, height, W)`` -> logits ``(B, frames(W), num_classes + 1)``, new state."""
        check_strings_input(x, c.in_channels, c.height, c.stride)
        keys = dropout_keys(key, c.num_layers + 1, c.dropout, train)
        x, new_state = stem(
            params, state, x, c, train=train, pool=lambda b, t: nn.max_pool2d(t, _pool(b, c), ceil_mode=True)
        )
        seq = x.permute(0, 3, 1, 2).flatten(2)  # (B, T, C*H): columns, left to right
        if "proj" in params:
            seq = nn.linear(params["proj"], seq)  # (B, T, proj or hidden)
        if c.encoder == "transformer":
            seq = seq + sinusoids(seq.shape[1], c.hidden, device=seq.device, dtype=seq.dtype)
            for n in range(1, c.num_layers + 1):
                seq = vit.block(params[f"layer{n}"], seq, c.heads, dropout=c.dropout, key=keys[n - 1], train=train)
            seq = nn.layer_norm(params["norm"], seq)
        else:
            seq, _ = rnn.encode(params, seq, c.rnn_config(), keys=keys[:-1], train=train)  # (B, T, dirs*hidden)
        seq = nn.dropout(seq, c.dropout, key=keys[-1], train=train)
        return nn.linear(params["head"], seq), new_state  # (B, T, num_classes + 1)

    return Model(init=init, apply=apply, init_state=init_state, config=c, name="crnn")
