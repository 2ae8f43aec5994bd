"""The reference ``nn.Module`` CNN: what a PyTorch user writes for an ``hwr.models.cnn`` config, the seed network
(conv32-conv64-fc128-fc10) by default. The step benchmark times it (with ``torch.optim.Adam``) as the
``eager_module`` baseline, and the tests check hwr's CNN and train step against it.

Per convolution: ``Conv2d`` (same padding), ``BatchNorm2d`` when ``norm="batch"``, ``ReLU``; ``MaxPool2d(2)`` after
each block, so ReLU comes before the pool as in the seed tutorial (``hwr.models.cnn`` pools first, the same values
and gradients); then ``Flatten``, ``Linear`` + ``ReLU`` when ``hidden``, ``Dropout``, the ``Linear`` head.

``seed_order_apply`` is the same network in hwr's pure layers with the seed's order (relu, then max-pool): what
``hwr.models.cnn``'s pool-then-relu reorder is measured and checked against.

Imported as ``benchmarks.reference`` with the repository root on ``sys.path`` (the benchmark scripts and
``tests/conftest.py`` put it there); torch is imported inside the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["grads_of", "module", "params_of", "seed_order_apply"]


def _conv_names(cfg: Any) -> list[tuple[int, int]]:
    return [(b, j) for b in range(1, len(cfg.channels) + 1) for j in range(1, cfg.convs_per_block + 1)]


def _layers(m: Any, cfg: Any) -> tuple[list, list, list]:
    from torch import nn

    convs = [x for x in m if isinstance(x, nn.Conv2d)]
    norms = [x for x in m if isinstance(x, nn.BatchNorm2d)]
    linears = [x for x in m if isinstance(x, nn.Linear)]
    return convs, norms, linears


def module(cfg: Any = None, params: dict | None = None, *, seed: int = 0) -> Any:
    """The ``nn.Sequential`` for ``cfg`` (default ``CNNConfig()``, the seed CNN) in training mode. With
    ``params`` (hwr's parameter tree) its weights are those; without, PyTorch's default initialisation drawn from
    ``torch.manual_seed(seed)`` inside ``fork_rng`` (the global RNG is left as it was)."""
    import torch
    from torch import nn

    if cfg is None:
        from hwr.models.cnn import CNNConfig

        cfg = CNNConfig()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        in_ch = cfg.in_channels
        for b, ch in enumerate(cfg.channels, start=1):
            for j in range(1, cfg.convs_per_block + 1):
                bias = True if params is None else "bias" in params[f"block{b}"][f"conv{j}"]
                layers.append(nn.Conv2d(in_ch, ch, cfg.kernel_size, padding=cfg.kernel_size // 2, bias=bias))
                if cfg.norm == "batch":
                    layers.append(nn.BatchNorm2d(ch))
                layers.append(nn.ReLU())
                in_ch = ch
            layers.append(nn.MaxPool2d(2))
        layers.append(nn.Flatten())
        width = cfg.flat_features
        if cfg.hidden:
            layers += [nn.Linear(width, cfg.hidden), nn.ReLU()]
            width = cfg.hidden
        layers += [nn.Dropout(cfg.dropout), nn.Linear(width, cfg.num_classes)]
        m = nn.Sequential(*layers)
    if params is not None:
        _load(m, cfg, params)
    return m.train()


def _load(m: Any, cfg: Any, params: dict) -> None:
    import torch

    convs, norms, linears = _layers(m, cfg)
    names = _conv_names(cfg)
    with torch.no_grad():
        for conv, (b, j) in zip(convs, names, strict=True):
            p = params[f"block{b}"][f"conv{j}"]
            conv.weight.copy_(p["kernel"])
            if "bias" in p:
                conv.bias.copy_(p["bias"])
        for norm, (b, j) in zip(norms, names if norms else [], strict=True):
            norm.weight.copy_(params[f"block{b}"][f"norm{j}"]["scale"])
            norm.bias.copy_(params[f"block{b}"][f"norm{j}"]["bias"])
        for lin, name in zip(linears, (["fc"] if cfg.hidden else []) + ["head"], strict=True):
            lin.weight.copy_(params[name]["kernel"])
            lin.bias.copy_(params[name]["bias"])


def _tree(m: Any, cfg: Any, get: Any) -> dict:
    """hwr's parameter tree of ``m``'s convolutions and linears (batch norm not included), each leaf ``get(t)``."""
    if cfg is None:
        from hwr.models.cnn import CNNConfig

        cfg = CNNConfig()
    convs, _, linears = _layers(m, cfg)
    out: dict = {}
    for conv, (b, j) in zip(convs, _conv_names(cfg), strict=True):
        p = {"kernel": get(conv.weight)}
        if conv.bias is not None:
            p["bias"] = get(conv.bias)
        out.setdefault(f"block{b}", {})[f"conv{j}"] = p
    for lin, name in zip(linears, (["fc"] if cfg.hidden else []) + ["head"], strict=True):
        out[name] = {"kernel": get(lin.weight), "bias": get(lin.bias)}
    return out


def params_of(m: Any, cfg: Any = None) -> dict:
    """Copies of ``m``'s weights as hwr's parameter tree (``{"block1": {"conv1": {"kernel", "bias"}}, ...}``)."""
    return _tree(m, cfg, lambda t: t.detach().clone())


def grads_of(m: Any, cfg: Any = None) -> dict:
    """Copies of ``m``'s gradients after a backward pass, as hwr's parameter tree."""
    return _tree(m, cfg, lambda t: t.grad.clone())


def seed_order_apply(cfg: Any, params: dict, state: dict, x: Any) -> Any:
    """``hwr.models.cnn``'s forward for ``cfg`` in the seed's order, relu then max-pool, written out with
    ``hwr.nn`` (batch norm in training mode, no dropout): ``x`` float ``(B, C, H, W)`` -> logits."""
    import torch.nn.functional as F

    from hwr import nn

    for b in range(1, len(cfg.channels) + 1):
        for j in range(1, cfg.convs_per_block + 1):
            x = nn.conv2d(params[f"block{b}"][f"conv{j}"], x)
            if cfg.norm == "batch":
                x, _ = nn.batch_norm(params[f"block{b}"][f"norm{j}"], state[f"block{b}"][f"norm{j}"], x, train=True)
            x = F.relu(x)
        x = F.max_pool2d(x, 2)
    x = x.flatten(1)
    if cfg.hidden:
        x = F.relu(nn.linear(params["fc"], x))
    return nn.linear(params["head"], x)
