"""Pure layers: each is an ``init_*(key, ...) -> params`` and a function of ``(params, x)``.

Parameters use PyTorch's layouts (conv kernels OIHW, linear kernels ``(out, in)``) so the fast ATen kernels
run without transposes, and PyTorch's default initialisation (uniform in +-1/sqrt(fan_in) for weights and
biases, the result of ``kaiming_uniform_(a=sqrt(5))``), drawn from explicit keys on the key's device (the
layers without a key take ``device=``). ``hwr.interop.jax`` converts layouts for Flax readers. Statistics that change in training (batch norm) live in an explicit
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
    "gru",
    "init_attention",
    "init_batch_norm",
    "init_conv2d",
    "init_gru",
    "init_layer_norm",
    "init_linear",
    "init_lstm",
    "layer_norm",
    "linear",
    "lstm",
    "max_pool2d",
    "multi_head_attention",
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


def max_pool2d(x: torch.Tensor, kernel: int | tuple[int, int], *, ceil_mode: bool = False) -> torch.Tensor:
    """``F.max_pool2d(x, kernel, ceil_mode=ceil_mode)`` (stride = kernel), to the bit: values, gradients, and the
    gradient's NCHW layout (which decides how the layers below round their own gradients).

    Eagerly on a CPU the window maxima of an NCHW ``x`` are found by ATen's channels-last kernel (its NCHW kernel is
    scalar, pytorch/pytorch#51393, and was a third of an eager ``hwr evaluate`` on one thread) and gathered from
    ``x`` by their indices, so the backward scatters into an NCHW zero gradient as ``F.max_pool2d``'s does; where no
    gradient is asked for, the maxima are laid out NCHW directly. Both kernels keep the first maximum of a window
    in the same scan order, and a maximum is exact. Compiled, traced, under ``vmap`` or on a GPU:
    ``F.max_pool2d`` as it is (inductor generates its own kernel).
    """
    plain = (
        x.device.type != "cpu"
        or x.dim() != 4
        or x.shape[1] == 1
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch._C._functorch.is_batchedtensor(x)
    )
    if plain or x.stride(1) == 1:  # already NHWC (channels vary fastest): ATen's fast kernel as it is
        return F.max_pool2d(x, kernel, ceil_mode=ceil_mode)
    nhwc = x.detach().permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    if not (x.requires_grad and torch.is_grad_enabled()):  # no gradient asked: the values, laid out NCHW
        return F.max_pool2d(nhwc, kernel, ceil_mode=ceil_mode).contiguous()
    _, where = F.max_pool2d(nhwc, kernel, ceil_mode=ceil_mode, return_indices=True)
    where = where.contiguous()  # (B, C, h, w): each maximum's place in its H*W plane
    return x.flatten(2).gather(2, where.flatten(2)).view(where.shape)


def init_layer_norm(dim: int, *, device: torch.device | str | None = None) -> Params:
    """LayerNorm affine parameters ``{"scale": ones, "bias": zeros}`` on ``device`` (pass the key's device)."""
    return {"scale": torch.ones(dim, device=device), "bias": torch.zeros(dim, device=device)}


def layer_norm(p: Params, x: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """Normalise the last dimension, as ``nn.LayerNorm``."""
    return F.layer_norm(x, (x.shape[-1],), p["scale"], p["bias"], eps)


def init_batch_norm(ch: int, *, device: torch.device | str | None = None) -> tuple[Params, dict[str, torch.Tensor]]:
    """Batch-norm parameters and its running statistics (the explicit state), on ``device``."""
    params = {"scale": torch.ones(ch, device=device), "bias": torch.zeros(ch, device=device)}
    state = {"mean": torch.zeros(ch, device=device), "var": torch.ones(ch, device=device)}
    return params, state


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
    Under bf16 autocast the statistics are taken in the state's dtype (float32, as autocast runs batch norm)
    and ``y`` keeps ``x``'s dtype.
    """
    if not train:
        y = F.batch_norm(x, s["mean"], s["var"], p["scale"], p["bias"], False, 0.0, eps)
        return y, s
    low, x = x.dtype, x.to(s["mean"].dtype)
    # ATen's own batch norm on the batch's statistics: one kernel and its backward, 3x faster eagerly than the
    # elementwise passes autograd records for the formula; it also returns the batch mean and 1/sqrt(var + eps),
    # from which the running statistics are read (no second pass over x)
    y, mean, invstd = torch.native_batch_norm(x, p["scale"], p["bias"], None, None, True, 0.0, eps)
    var = (invstd.detach().pow(-2) - eps).clamp_min(0.0)  # the biased batch variance
    n = x.numel() // x.shape[1]
    new = {
        "mean": torch.lerp(s["mean"], mean.detach(), momentum),
        "var": torch.lerp(s["var"], var * (n / max(n - 1, 1)), momentum),
    }
    return y.to(low), new


def dropout(x: torch.Tensor, rate: float, *, key: Key | None, train: bool) -> torch.Tensor:
    """Inverted dropout from an explicit key; identity when not training or ``rate == 0``.

    Refuses to run in training without a key, so randomness can never silently come from a global RNG. The mask
    is drawn on the key's device, which must be the activations' (a static check, free under compile).
    """
    if not train or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout in training needs key=...; derive one with hwr.random.fold_in(key, step)")
    random.check_device(key, x, "dropout")
    keep = random.uniform(key, x.shape) >= rate
    return torch.where(keep, x / (1.0 - rate), torch.zeros((), dtype=x.dtype, device=x.device))


# ---------------------------------------------------------------------------------------------- recurrent cells


def init_gru(k: Key, in_features: int, hidden: int) -> dict[str, Params]:
    """GRU parameters in ``nn.GRU``'s packed layout (gate rows ``r, z, n``), initialised as ``nn.GRU``
    (uniform in +-1/sqrt(hidden)): ``{"ih": {"kernel": (3H, in), "bias": (3H,)}, "hh": {"kernel": (3H, H), ...}}``."""
    return _init_recurrent(k, in_features, hidden, 3)


def init_lstm(k: Key, in_features: int, hidden: int) -> dict[str, Params]:
    """LSTM parameters in ``nn.LSTM``'s packed layout (gate rows ``i, f, g, o``), initialised as ``nn.LSTM``:
    ``{"ih": {"kernel": (4H, in), "bias": (4H,)}, "hh": {"kernel": (4H, H), "bias": (4H,)}}``."""
    return _init_recurrent(k, in_features, hidden, 4)


def _init_recurrent(k: Key, in_features: int, hidden: int, gates: int) -> dict[str, Params]:
    k1, k2, k3, k4 = random.split(k, 4)
    return {
        "ih": {
            "kernel": _uniform_fan_in(k1, (gates * hidden, in_features), hidden),
            "bias": _uniform_fan_in(k2, (gates * hidden,), hidden),
        },
        "hh": {
            "kernel": _uniform_fan_in(k3, (gates * hidden, hidden), hidden),
            "bias": _uniform_fan_in(k4, (gates * hidden,), hidden),
        },
    }


def _time_order(x: torch.Tensor, reverse: bool) -> list[int]:
    steps = list(range(x.shape[1]))
    return steps[::-1] if reverse else steps


def _steps(xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``xs`` ``(B, T, F)`` split into its ``T`` steps by one ``unbind``: its backward is one ``stack``, where
    indexing ``xs[:, t]`` per step makes a zero-filled ``(B, T, F)`` gradient for every step and adds them all
    (quadratic in ``T``; a tenth of an eager strings step at the recipe's width)."""
    return xs.unbind(1)


def gru(
    p: dict[str, Params], x: torch.Tensor, h0: torch.Tensor | None = None, *, reverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU direction over ``x`` ``(B, T, in)`` -> ``(outputs (B, T, H), final h (B, H))``, as ``nn.GRU``.

    The input projection runs once for all steps; the recurrence is a Python loop over the static ``T``, which
    ``torch.compile`` unrolls into one graph. ``reverse`` reads ``T-1 .. 0`` (the backward direction); its
    outputs stay aligned with the input positions and its final state is the one after step 0.
    """
    hidden = p["hh"]["kernel"].shape[1]
    xs = linear(p["ih"], x)  # (B, T, 3H)
    h = x.new_zeros(x.shape[0], hidden) if h0 is None else h0  # (B, H)
    outs: list[torch.Tensor] = [h] * x.shape[1]
    steps = _steps(xs)
    for t in _time_order(x, reverse):
        xr, xz, xn = steps[t].chunk(3, dim=-1)
        hr, hz, hn = linear(p["hh"], h).chunk(3, dim=-1)  # (B, H) each
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = torch.lerp(n, h, z)  # (1 - z) * n + z * h
        outs[t] = h
    return torch.stack(outs, dim=1), h


def lstm(
    p: dict[str, Params],
    x: torch.Tensor,
    state0: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    reverse: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One LSTM direction over ``x`` ``(B, T, in)`` -> ``(outputs (B, T, H), (h, c) final (B, H) each)``, as
    ``nn.LSTM``; the loop and ``reverse`` work as in ``gru``."""
    hidden = p["hh"]["kernel"].shape[1]
    xs = linear(p["ih"], x)  # (B, T, 4H)
    if state0 is None:
        h = c = x.new_zeros(x.shape[0], hidden)
    else:
        h, c = state0
    outs: list[torch.Tensor] = [h] * x.shape[1]
    steps = _steps(xs)
    for t in _time_order(x, reverse):
        gates = steps[t] + linear(p["hh"], h)  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs[t] = h
    return torch.stack(outs, dim=1), (h, c)


# ---------------------------------------------------------------------------------------------- attention


def init_attention(k: Key, dim: int) -> dict[str, Params]:
    """Self-attention parameters, initialised as ``nn.MultiheadAttention``: ``{"qkv": {"kernel": (3D, D), "bias":
    zeros}, "out": {"kernel": (D, D), "bias": zeros}}``; ``qkv`` packs query, key and value rows (``in_proj``)."""
    kq, ko = random.split(k)
    bound = math.sqrt(6.0 / (dim + 3 * dim))  # xavier_uniform_ over the packed (3D, D) matrix
    return {
        "qkv": {
            "kernel": random.uniform(kq, (3 * dim, dim), low=-bound, high=bound),
            "bias": torch.zeros(3 * dim, device=k.device),
        },
        "out": {"kernel": _uniform_fan_in(ko, (dim, dim), dim), "bias": torch.zeros(dim, device=k.device)},
    }


def multi_head_attention(p: dict[str, Params], x: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head self-attention ``(B, T, D) -> (B, T, D)`` through ``F.scaled_dot_product_attention`` (no mask,
    no attention-probability dropout: SDPA's would draw from the global RNG)."""
    b, t, d = x.shape
    if d % heads:
        raise ValueError(f"model width {d} is not divisible by heads={heads}; pick heads that divide it")
    qkv = linear(p["qkv"], x).reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # (3, B, h, T, D/h)
    y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, h, T, D/h)
    return linear(p["out"], y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)
