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

__all__ = ["lr_multipliers", "top_level_groups", "transfer"]

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
