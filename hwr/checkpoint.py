"""Checkpoints: a whole ``TrainState`` (or any pytree) as one safetensors file with JSON metadata, atomic.

Tensors are stored under their dotted pytree names (``params.block1.conv1.kernel``,
``opt_state.0.mu.head.bias``...), so a JAX or NumPy user reads them with ``safetensors`` alone. Loading fills a
*template* pytree (built from the same config) by name and checks every shape, so a checkpoint from another
architecture, a truncated file or a foreign file is refused with a message that says which.

Checkpoints are device-neutral: a file holds no device (safetensors writes CPU bytes, from any device), and
``load`` puts each tensor on its template leaf's device, or on ``device`` when given, so a state saved on a GPU
loads on a CPU and the reverse (a template on ``meta`` gives the shapes without allocating anything).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch.utils import _pytree as pytree

from hwr import files, tree
from hwr.errors import HwrError
from hwr.tree import PyTree

__all__ = ["CheckpointError", "load", "load_flat", "read_metadata", "save"]

_META_KEY = "hwr"


class CheckpointError(HwrError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


def save(path: str | os.PathLike, state: PyTree, metadata: dict[str, Any] | None = None) -> Path:
    """Atomically write every tensor leaf of ``state`` plus ``metadata`` (JSON-serialisable) to ``path``."""
    flat = tree.flatten_names(state)
    tensors = {k: v.detach().contiguous().clone() for k, v in flat.items() if isinstance(v, torch.Tensor)}
    meta = {_META_KEY: json.dumps(metadata or {})}
    return files.write_bytes(path, st_save(tensors, metadata=meta))


def load_flat(path: str | os.PathLike, *, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(tensors by dotted name, metadata)``; with ``prefix`` (``"params."``) only the tensors under it,
    named without it. Raises ``CheckpointError`` if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first (hwr train --out ...) or check the path")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        meta = _metadata_of(data)
    except (SafetensorError, ValueError, json.JSONDecodeError, OSError) as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({e}); delete it and retrain, or resume from an older copy"
        ) from None
    if prefix:
        tensors = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors, meta


def _metadata_of(data: bytes) -> dict[str, Any]:
    # safetensors layout: 8-byte little-endian header length, then the JSON header with "__metadata__".
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return json.loads(header.get("__metadata__", {}).get(_META_KEY, "{}"))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Only the metadata (reads the whole file to validate it)."""
    return load_flat(path)[1]


def _unexpected(tensors: dict[str, torch.Tensor], names: dict[str, Any], template: PyTree, prefix: str) -> list[str]:
    """The checkpoint's tensors under one of ``template``'s top-level fields that the template lacks (an Adam state
    loaded into an SGD template, a layer the model does not have); fields the template leaves out (a run's
    optimizer state when only its parameters are read) are not looked at."""
    if isinstance(template, dict):
        top = {str(k) for k in template}
    elif hasattr(template, "_fields"):
        top = set(template._fields)
    else:
        return []
    return sorted(
        k
        for k in tensors
        if k.startswith(prefix) and k[len(prefix) :].split(".")[0] in top and k[len(prefix) :] not in names
    )


def _older_counter(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A step counter as runs before 2026-12-07 stored it (a float64 0-d whole number) in the int64 the template
    holds now (``hwr.optim``); every other tensor as it is, for the checks that follow."""
    if t.dtype == torch.float64 and like.dtype == torch.int64 and t.dim() == like.dim() == 0 and float(t) == int(t):
        return t.to(torch.int64)
    return t


def load(
    path: str | os.PathLike, template: PyTree, *, prefix: str = "", device: str | torch.device | None = None
) -> PyTree:
    """Fill ``template``'s tensor leaves from ``path`` by name (under ``prefix``, e.g. ``"params."``), checking
    names, shapes and dtypes; non-tensor leaves are kept from the template. Each tensor goes to ``device``, or
    where its template leaf lives when ``device`` is None."""
    tensors, _ = load_flat(path)
    names = tree.flatten_names(template)
    missing = [prefix + k for k, v in names.items() if isinstance(v, torch.Tensor) and prefix + k not in tensors]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {len(missing)} tensor(s) the model needs (first: {missing[:3]}); it was made "
            "by another architecture or optimizer: load it with the config it was trained with"
        )
    extra = _unexpected(tensors, names, template, prefix)
    if extra:
        raise CheckpointError(
            f"checkpoint {path} holds {len(extra)} tensor(s) the model does not have (first: {extra[:3]}); it was "
            "made by another architecture or optimizer: load it with the config it was trained with"
        )
    leaves = []
    for k, v in names.items():
        if not isinstance(v, torch.Tensor):
            leaves.append(v)
            continue
        t = _older_counter(tensors[prefix + k], v)
        if t.shape != v.shape or t.dtype != v.dtype:
            raise CheckpointError(
                f"checkpoint {path}: {prefix + k} has shape {tuple(t.shape)} {t.dtype}, the model expects "
                f"{tuple(v.shape)} {v.dtype}; the checkpoint comes from another architecture"
            )
        leaves.append(t.to(v.device if device is None else device))
    return pytree.tree_unflatten(leaves, tree.structure(template))
