"""Pytree helpers over ``torch.utils._pytree``: the few operations the optimizers, checkpoints and interop need.

Every function is pure and traceable by ``torch.compile(fullgraph=True)``. Pytrees are nested dicts, lists,
tuples and NamedTuples of tensors; leaves that are not tensors (None, ints) are passed through by ``map``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils import _pytree as pytree

PyTree = Any

__all__ = [
    "PyTree",
    "assert_same_structure",
    "flatten_names",
    "global_norm",
    "leaves",
    "map",
    "num_params",
    "ones_like",
    "stack",
    "structure",
    "unflatten_names",
    "unstack",
    "zeros_like",
]


def map(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """Apply ``fn`` leaf-wise over one or more pytrees of the same structure."""
    if rest:
        assert_same_structure(tree, *rest)
    return pytree.tree_map(fn, tree, *rest)


def leaves(tree: PyTree) -> list[Any]:
    """The leaves of ``tree`` in a fixed (insertion) order."""
    return pytree.tree_leaves(tree)


def structure(tree: PyTree) -> pytree.TreeSpec:
    """The tree's structure, comparable with ``==``."""
    return pytree.tree_structure(tree)


def assert_same_structure(*trees: PyTree) -> None:
    """Raise ``ValueError`` naming the first differing paths when pytrees do not share one structure."""
    first = structure(trees[0])
    for i, other in enumerate(trees[1:], start=1):
        if structure(other) != first:
            a, b = set(flatten_names(trees[0], strict=False)), set(flatten_names(other, strict=False))
            missing, extra = sorted(a - b)[:5], sorted(b - a)[:5]
            raise ValueError(
                f"pytree {i} does not match pytree 0: missing {missing or '-'}, unexpected {extra or '-'}; "
                "build both from the same model config (or convert with hwr.tree.unflatten_names)"
            )


def stack(trees: Sequence[PyTree]) -> PyTree:
    """One pytree whose tensor leaves are ``trees``' leaves stacked along a new leading axis (what ``vmap`` maps
    over); a leaf that is not a tensor (None, an int) must be equal in every tree and is kept as it is. Raises
    ``ValueError`` naming the first differing path when the trees differ in structure or in a leaf's shape, dtype
    or (non-tensor) value."""
    if not trees:
        raise ValueError("stack needs at least one pytree")
    assert_same_structure(*trees)
    named = [flatten_names(t, strict=False) for t in trees]
    for name, first in named[0].items():
        for i, other in enumerate(named[1:], start=1):
            leaf = other[name]
            if isinstance(first, torch.Tensor):
                same = isinstance(leaf, torch.Tensor) and (leaf.shape, leaf.dtype) == (first.shape, first.dtype)
            else:
                same = not isinstance(leaf, torch.Tensor) and leaf == first
            if not same:
                got = lambda x: f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else repr(x)
                raise ValueError(f"pytree {i} differs from pytree 0 at {name!r}: {got(leaf)} against {got(first)}")
    return pytree.tree_map(lambda *xs: torch.stack(xs) if isinstance(xs[0], torch.Tensor) else xs[0], *trees)


def unstack(tree: PyTree) -> list[PyTree]:
    """The inverse of ``stack``: one pytree per index of the tensor leaves' common leading axis (each leaf a view,
    the non-tensor leaves shared). Raises ``ValueError`` when the tree has no tensor leaf, a 0-d one, or leading
    sizes that differ."""
    sizes = {name: x.shape[0] if x.dim() else None for name, x in _tensors(tree).items()}
    if not sizes or len(set(sizes.values())) != 1 or None in sizes.values():
        raise ValueError(f"unstack needs tensor leaves with one common leading axis, got sizes {sizes}")
    k = next(iter(sizes.values()))
    return [pytree.tree_map(lambda x, i=i: x[i] if isinstance(x, torch.Tensor) else x, tree) for i in range(k)]


def _tensors(tree: PyTree) -> dict[str, torch.Tensor]:
    return {k: x for k, x in flatten_names(tree, strict=False).items() if isinstance(x, torch.Tensor)}


def zeros_like(tree: PyTree, dtype: torch.dtype | None = None) -> PyTree:
    """A pytree of zeros shaped like ``tree``."""
    return pytree.tree_map(lambda x: torch.zeros_like(x, dtype=dtype), tree)


def ones_like(tree: PyTree, dtype: torch.dtype | None = None) -> PyTree:
    """A pytree of ones shaped like ``tree``."""
    return pytree.tree_map(lambda x: torch.ones_like(x, dtype=dtype), tree)


def global_norm(tree: PyTree) -> torch.Tensor:
    """The L2 norm of all leaves taken together (a 0-d float32 tensor), as ``clip_grad_norm_`` computes it."""
    ls = [x for x in leaves(tree) if isinstance(x, torch.Tensor)]
    if not ls:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in ls]))


def num_params(tree: PyTree) -> int:
    """Total number of scalar entries over all tensor leaves."""
    return sum(x.numel() for x in leaves(tree) if isinstance(x, torch.Tensor))


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def flatten_names(tree: PyTree, *, strict: bool = True) -> dict[str, Any]:
    """Flatten a pytree to ``{"conv1.kernel": tensor, ...}`` with dotted path names.

    ``strict`` rejects keys that contain a dot, which would make the names ambiguous to unflatten.
    """
    out: dict[str, Any] = {}
    for path, leaf in pytree.tree_flatten_with_path(tree)[0]:
        parts = [_key_name(k) for k in path]
        if strict and any("." in p for p in parts):
            raise ValueError(f"pytree key {parts} contains '.', which flatten_names uses as separator; rename it")
        out[".".join(parts)] = leaf
    return out


def unflatten_names(flat: dict[str, Any]) -> dict[str, Any]:
    """Invert ``flatten_names`` for trees of nested dicts (the shape of every params pytree here)."""
    root: dict[str, Any] = {}
    for name, leaf in flat.items():
        node = root
        *parents, last = name.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"name {name!r} clashes with leaf {p!r}: a name cannot be both a leaf and a folder")
            node = child
        if last in node:
            raise ValueError(f"duplicate name {name!r}")
        node[last] = leaf
    return root
