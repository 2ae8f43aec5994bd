"""Pure layers: each is an ``init_*(key, ...) -> params`` and a function of ``(params, x)``.

Parameters use PyTorch's layouts (conv kernels OIHW, linear kernels ``(out, in)``) so the fast ATen kernels
run without transposes, and PyTorch's default initialisation (uniform in +-1/sqrt(fan_in) for weights and
biases, the result of ``kaiming_uniform_(a=sqrt(5))``), drawn from explicit keys. ``hwr.interop.jax``
converts layouts for Flax readers. Statistics that change in training (batch norm) live in an explicit
``state`` pytree that the function takes and returns.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hwr import random
from hwr.random import Key

Params = dict[str, torch.Tensor]

__all__ = [
    "batch_norm",
    "conv2d",
    "dropout",
    "init_batch_norm",
    "init_conv2d",
    "init_layer_norm",
    "init_linear",
    "layer_norm",
    "linear",
]


def _uniform_fan_in(k: Key, shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return random.uniform(k, shape, low=-bound, high=bound)


def init_conv2d(k: Key, in_ch: int, out_ch: int, kernel_size: int, *, bias: bool = True) -> Params:
    """Conv parameters ``{"kernel": (O, I, kh, kw), "bias": (O,)}`` initialised as ``nn.Conv2d``."""
    kk, kb = random.split(k)
    fan_in = in_ch * kernel_size * kernel_size
    p = {"kernel": _uniform_fan_in(kk, (out_ch, in_ch, kernel_size, kernel_size), fan_in)}
    if bias:
        p["bias"] = _uniform_fan_in(kb, (out_ch,), fan_in)
    return p


def conv2d(p: Params, x: torch.Tensor, *, stride: int = 1, padding: int | str = "same") -> torch.Tensor:
    """``(B, I, H, W) -> (B, O, H', W')``; ``padding="same"`` keeps H and W for odd kernels at stride 1."""
    if padding == "same":
        padding = p["kernel"].shape[-1] // 2
    return F.conv2d(x, p["kernel"], p.get("bias"), stride=stride, padding=padding)


def init_linear(k: Key, in_features: int, out_features: int, *, bias: bool = True) -> Params:
    """Linear parameters ``{"kernel": (out, in), "bias": (out,)}`` initialised as ``nn.Linear``."""
    kk, kb = random.split(k)
    p = {"kernel": _uniform_fan_in(kk, (out_features, in_features), in_features)}
    if bias:
        p["bias"] = _uniform_fan_in(kb, (out_features,), in_features)
    return p


def linear(p: Params, x: torch.Tensor) -> torch.Tensor:
    """``(..., in) -> (..., out)``."""
    return F.linear(x, p["kernel"], p.get("bias"))


def init_layer_norm(dim: int) -> Params:
    """LayerNorm affine parameters ``{"scale": ones, "bias": zeros}``."""
    return {"scale": torch.ones(dim), "bias": torch.zeros(dim)}


def layer_norm(p: Params, x: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """Normalise the last dimension, as ``nn.LayerNorm``."""
    return F.layer_norm(x, (x.shape[-1],), p["scale"], p["bias"], eps)


def init_batch_norm(ch: int) -> tuple[Params, dict[str, torch.Tensor]]:
    """Batch-norm parameters and its running statistics (the explicit state)."""
    return (
        {"scale": torch.ones(ch), "bias": torch.zeros(ch)},
        {"mean": torch.zeros(ch), "var": torch.ones(ch)},
    )


def batch_norm(
    p: Params,
    s: dict[str, torch.Tensor],
    x: torch.Tensor,
    *,
    train: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Batch norm over ``(B, C, H, W)`` returning ``(y, new_state)``; running stats never mutate in place.

    Matches ``nn.BatchNorm2d`` (biased variance to normalise, unbiased variance for the running estimate).
    """
    if not train:
        y = F.batch_norm(x, s["mean"], s["var"], p["scale"], p["bias"], False, 0.0, eps)
        return y, s
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    n = x.numel() // x.shape[1]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + eps)
    y = y * p["scale"].reshape(shape) + p["bias"].reshape(shape)
    new = {
        "mean": torch.lerp(s["mean"], mean.detach(), momentum),
        "var": torch.lerp(s["var"], var.detach() * (n / max(n - 1, 1)), momentum),
    }
    return y, new


def dropout(x: torch.Tensor, rate: float, *, key: Key | None, train: bool) -> torch.Tensor:
    """Inverted dropout from an explicit key; identity when not training or ``rate == 0``.

    Refuses to run in training without a key, so randomness can never silently come from a global RNG.
    """
    if not train or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout in training needs key=...; derive one with hwr.random.fold_in(key, step)")
    keep = random.uniform(key, x.shape) >= rate
    return torch.where(keep, x / (1.0 - rate), torch.zeros((), dtype=x.dtype, device=x.device))
