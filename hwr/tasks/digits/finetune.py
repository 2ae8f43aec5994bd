"""Fine-tuning: carry pretrained parameters into a (possibly changed) model, and say which parameters train.

Parameters are matched by dotted name and shape, so a new head (another class count, another hidden width) is
freshly initialised while everything that still fits is kept. Which parameters train is a pytree of learning-
rate multipliers for ``hwr.optim.scale_by_multipliers``: 0 freezes, a fraction slows the backbone.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from hwr import tree
from hwr.tree import PyTree

__all__ = [
    "anchored_mask",
    "fold_logit_adjustment",
    "interpolate",
    "lr_multipliers",
    "tau_normalize",
    "top_level_groups",
    "transfer",
]

_BLOCK = re.compile(r"^(block|layer)(\d+)$")


def transfer(
    pretrained: dict[str, torch.Tensor], fresh: PyTree, *, reinit: tuple[str, ...] = ()
) -> tuple[PyTree, list[str]]:
    """``fresh`` with every leaf replaced by the pretrained tensor of the same dotted name and shape, except under
    the top-level keys in ``reinit``. Returns ``(params, names kept fresh)``. ``pretrained`` is a flat
    ``{"block1.conv1.kernel": tensor}`` dict (e.g. ``checkpoint.load_flat(...)`` entries under ``params.``)."""
    flat = tree.flatten_names(fresh)
    out, kept_fresh = {}, []
    for name, leaf in flat.items():
        src = pretrained.get(name)
        if src is not None and src.shape == leaf.shape and name.split(".")[0] not in reinit:
            out[name] = src.to(device=leaf.device, dtype=leaf.dtype).clone()
        else:
            out[name] = leaf
            kept_fresh.append(name)
    return tree.unflatten_names(out), kept_fresh


def top_level_groups(params: dict[str, Any]) -> dict[str, list[str]]:
    """Split top-level parameter keys into ``head``, ``last`` (the last numbered block and everything after it
    except the head) and ``early`` (the rest), in the model's own order."""
    keys = list(params)
    blocks = [k for k in keys if _BLOCK.match(k)]
    if "head" not in params:
        raise ValueError(
            f"model parameters have no 'head' (top-level keys: {keys}); fine-tuning needs a classifier head"
        )
    last_block = max(blocks, key=lambda k: int(_BLOCK.match(k).group(2))) if blocks else None
    start = keys.index(last_block) if last_block else keys.index("head")
    last = [k for k in keys[start:] if k != "head"]
    early = [k for k in keys if k not in last and k != "head"]
    return {"head": ["head"], "last": last, "early": early}


def lr_multipliers(params: dict[str, Any], trainable: str, backbone_lr_mult: float = 1.0) -> PyTree:
    """A pytree of floats shaped like ``params``: 1 for the head, ``backbone_lr_mult`` for trainable backbone
    parameters, 0 for frozen ones. ``trainable``: head | last | all."""
    if trainable not in ("head", "last", "all"):
        raise ValueError(f"trainable must be head, last or all, got {trainable!r}")
    groups = top_level_groups(params)
    train_keys = {"head": set(), "last": set(groups["last"]), "all": set(groups["last"]) | set(groups["early"])}[
        trainable
    ]
    factor = {k: 1.0 if k == "head" else (backbone_lr_mult if k in train_keys else 0.0) for k in params}
    return {k: tree.map(lambda _x, f=factor[k]: f, v) for k, v in params.items()}


def interpolate(source: PyTree, finetuned: PyTree, alpha: float, anchored: PyTree | None = None) -> PyTree:
    """WiSE-FT (Wortsman et al. 2022): ``(1 - alpha) * source + alpha * finetuned`` leaf by leaf; ``alpha=1`` is
    the fine-tuned model, ``alpha=0`` the source. Leaves where ``anchored`` is False (freshly initialised, with no
    source counterpart) keep their fine-tuned value. Pure: new tensors, inputs untouched."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"interpolation alpha must be in [0, 1], got {alpha}")
    if anchored is None:
        return tree.map(lambda s, f: torch.lerp(s, f, alpha), source, finetuned)
    return tree.map(lambda s, f, a: torch.lerp(s, f, alpha) if a else f.clone(), source, finetuned, anchored)


def anchored_mask(params: PyTree, fresh: list[str]) -> PyTree:
    """A pytree of bools shaped like ``params``: True where the leaf came from the source (not in ``fresh``)."""
    fresh_set = set(fresh)
    flat = tree.flatten_names(params)
    return tree.unflatten_names({name: name not in fresh_set for name in flat})


def _head(params: PyTree) -> dict[str, torch.Tensor]:
    head = params.get("head") if isinstance(params, dict) else None
    if not isinstance(head, dict) or "kernel" not in head or head["kernel"].ndim != 2:
        raise ValueError("the model has no linear 'head' {'kernel': (classes, features), 'bias'} to adjust")
    return head


def tau_normalize(params: PyTree, tau: float) -> PyTree:
    """tau-normalisation of the classifier (Kang et al. 2020): each class row ``w_c`` of the head kernel becomes
    ``w_c / ||w_c|| ** tau`` (0: unchanged, 1: unit norm), which undoes the large norms the head classes grow
    under imbalance. The bias is kept. Returns new params; the input is untouched."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    head = _head(params)
    w = head["kernel"]
    norms = w.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (classes, 1)
    return {**params, "head": {**head, "kernel": w / norms.pow(tau)}}


def fold_logit_adjustment(params: PyTree, class_prior: torch.Tensor, tau: float) -> PyTree:
    """Post-hoc logit adjustment folded into the head: ``bias - tau * log(prior)``, so the saved model predicts
    ``logits - tau * log(prior)`` (``hwr.losses.posthoc_adjust``) everywhere it is used, with no extra code."""
    head = _head(params)
    if "bias" not in head:
        raise ValueError("post-hoc logit adjustment needs a head with a bias")
    b = head["bias"]
    prior = class_prior.to(device=b.device, dtype=b.dtype)
    if prior.shape != b.shape:
        raise ValueError(f"class prior of shape {tuple(prior.shape)} does not match the head's {tuple(b.shape)}")
    return {**params, "head": {**head, "bias": b - tau * torch.log(prior.clamp_min(1e-12))}}
