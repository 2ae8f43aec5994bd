"""The convolutional family. ``CNNConfig()`` is the seed tutorial's network:

    conv 1->32 3x3 pad 1, relu, maxpool 2    (B, 32, 14, 14)
    conv 32->64 3x3 pad 1, relu, maxpool 2   (B, 64, 7, 7)
    flatten 3136 -> fc 128, relu -> fc 10

The config spans what an architecture search needs: blocks (``len(channels)``), channels per block, convs per
block, kernel size, hidden width (0: no hidden layer), dropout, and optional batch normalisation.

Parameters: ``{"block1": {"conv1": {"kernel", "bias"}, "norm1": {...}}, ..., "fc": {...}, "head": {...}}``.
``head`` is the classifier, the part fine-tuning replaces when the class set changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from hwr import nn, random
from hwr.models.base import Model, check_input
from hwr.random import Key

__all__ = ["CNNConfig", "StemConfig", "init_stem", "init_stem_state", "model", "stem"]


@dataclass(frozen=True)
class CNNConfig:
    """Architecture of a conv-pool CNN; defaults are the seed's conv32-conv64-fc128-fc10."""

    channels: tuple[int, ...] = (32, 64)
    convs_per_block: int = 1
    kernel_size: int = 3
    hidden: int = 128
    dropout: float = 0.0
    norm: str = "none"  # "none" | "batch"
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28

    def __post_init__(self) -> None:
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {self.channels}")
        if self.convs_per_block < 1 or self.hidden < 0 or self.num_classes < 1 or self.in_channels < 1:
            raise ValueError(
                f"need convs_per_block >= 1, hidden >= 0 (0: no hidden layer), num_classes >= 1, in_channels >= 1; "
                f"got {self.convs_per_block}, {self.hidden}, {self.num_classes}, {self.in_channels}"
            )
        if self.kernel_size % 2 == 0 or self.kernel_size < 1:
            raise ValueError(f"kernel_size must be odd (same padding), got {self.kernel_size}")
        if self.norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size >> len(self.channels) < 1:
            raise ValueError(f"{len(self.channels)} pooling blocks shrink a {self.image_size}px image to nothing")

    @property
    def feature_size(self) -> int:
        """Side of the feature map after all blocks (each pools by 2, flooring)."""
        return self.image_size >> len(self.channels)

    @property
    def flat_features(self) -> int:
        return self.channels[-1] * self.feature_size**2


class StemConfig(Protocol):
    """What the conv-pool blocks read from a config (``CNNConfig``, ``hwr.models.crnn.CRNNConfig``)."""

    channels: tuple[int, ...]
    convs_per_block: int
    kernel_size: int
    norm: str
    in_channels: int


def init_stem(keys: Sequence[Key], c: StemConfig) -> dict[str, Any]:
    """``{"block1": {"conv1", ["norm1"], ...}, ...}``: one key per conv, in order; no conv bias under batch norm."""
    bn = c.norm == "batch"
    params: dict[str, Any] = {}
    i, in_ch = 0, c.in_channels
    for b, out_ch in enumerate(c.channels, start=1):
        block: dict[str, Any] = {}
        for j in range(1, c.convs_per_block + 1):
            block[f"conv{j}"] = nn.init_conv2d(keys[i], in_ch, out_ch, c.kernel_size, bias=not bn)
            if bn:
                block[f"norm{j}"] = nn.init_batch_norm(out_ch, device=keys[i].device)[0]
            i, in_ch = i + 1, out_ch
        params[f"block{b}"] = block
    return params


def init_stem_state(c: StemConfig, device: torch.device | str | None = None) -> dict[str, Any]:
    """The blocks' batch-norm running statistics on ``device`` (``{}`` without batch norm)."""
    if c.norm != "batch":
        return {}
    return {
        f"block{b}": {f"norm{j}": nn.init_batch_norm(ch, device=device)[1] for j in range(1, c.convs_per_block + 1)}
        for b, ch in enumerate(c.channels, start=1)
    }


def stem(
    params: dict[str, Any],
    state: dict[str, Any],
    x: torch.Tensor,
    c: StemConfig,
    *,
    train: bool,
    pool: Callable[[int, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The blocks: conv [+ batch norm] (relu between convs), ``pool(block, x)``, relu. Returns ``(x, new_state)``.

    relu(maxpool(x)) == maxpool(relu(x)) in values and gradients (ties pick the same first index), and the relu
    and its backward then touch a quarter of the data."""
    bn = c.norm == "batch"
    new_state: dict[str, Any] = {}
    for b in range(1, len(c.channels) + 1):
        block = params[f"block{b}"]
        for j in range(1, c.convs_per_block + 1):
            x = nn.conv2d(block[f"conv{j}"], x)  # (B, C_b, H, W)
            if bn:
                x, s = nn.batch_norm(block[f"norm{j}"], state[f"block{b}"][f"norm{j}"], x, train=train)
                new_state.setdefault(f"block{b}", {})[f"norm{j}"] = s
            if j < c.convs_per_block:
                x = F.relu(x)
        x = F.relu(pool(b, x))
    return x, new_state


def _halve(_block: int, x: torch.Tensor) -> torch.Tensor:
    return nn.max_pool2d(x, 2)


def model(config: CNNConfig = CNNConfig()) -> Model:
    """Build the pure CNN for ``config``."""
    c = config

    def init(key: Key) -> dict[str, Any]:
        n_convs = len(c.channels) * c.convs_per_block
        keys = random.split(key, n_convs + 2)
        params = init_stem(keys, c)
        i = n_convs
        width = c.flat_features
        if c.hidden:
            params["fc"] = nn.init_linear(keys[i], width, c.hidden)
            width = c.hidden
        params["head"] = nn.init_linear(keys[i + 1], width, c.num_classes)
        return params

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
        """``x``: float ``(B, in_channels, H, W)`` -> logits ``(B, num_classes)``, new state."""
        check_input(x, c.in_channels, c.image_size)
        x, new_state = stem(params, state, x, c, train=train, pool=_halve)  # (B, C_N, h, w)
        x = x.flatten(1)  # (B, C*h*w)
        if c.hidden:
            x = F.relu(nn.linear(params["fc"], x))  # (B, hidden)
        x = nn.dropout(x, c.dropout, key=key, train=train)
        return nn.linear(params["head"], x), new_state  # (B, num_classes)

    return Model(init=init, apply=apply, init_state=init_state, config=c, name="cnn")
