"""optdigits, derived: scikit-learn's bundled ``load_digits`` (1,797 8x8 digits) converted into MNIST's space by
``hwr.data.digits.mnist_style``, its fixed balanced train/test split, the held-out balanced validation split
(``val`` images per class), and the long-tailed draws of ``optdigits-lt`` (``ratio``, head-to-tail ``order``),
whose unlabelled split is the rest of the training pool (the images the draw leaves out, without their labels: what
a researcher who labelled a long-tailed few has besides, for self-training). Every split is drawn with a fixed key, so the same name always gives the same images."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import numpy as np
import torch

from hwr import files, random
from hwr.data import idx, splits
from hwr.data.catalog import DIGITS, OPTDIGITS_VAL_PER_CLASS, PARAMS, Dataset
from hwr.data.filecheck import write

__all__ = [
    "OPTDIGITS_SPLIT_SEED",
    "OPTDIGITS_TEST_FRACTION",
    "load",
    "optdigits_split",
    "optdigits_val_split",
    "write_idx",
]

OPTDIGITS_TEST_FRACTION = 0.3
OPTDIGITS_SPLIT_SEED = 8_081_998  # fixed: the optdigits train/test split never changes


def _conversion_version() -> str:
    """Changes whenever ``hwr/data/digits.py`` (the conversion) changes, invalidating cached conversions."""
    from hwr.data import digits

    return digits.conversion_version()


def _all(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits in MNIST's space: uint8 ``(1797, 1, 28, 28)``, int64 labels (new tensors on
    every call, so no caller shares another's).

    Converting takes a few seconds (mostly importing scikit-learn), so the result is cached in
    ``ROOT/optdigits/optdigits-28x28.pt`` together with the version of the conversion code that made it."""
    cache = root / "optdigits" / "optdigits-28x28.pt"
    version = _conversion_version()
    try:
        saved = torch.load(cache, weights_only=True)
        images, labels = saved["images"], saved["labels"]
        if (
            saved.get("version") == version
            and images.shape == (1797, 1, 28, 28)
            and images.dtype == torch.uint8
            and labels.shape == (1797,)
            and labels.dtype == torch.int64
        ):
            return images, labels
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, pickle.UnpicklingError, EOFError):
        pass  # missing or unreadable: convert again
    from sklearn.datasets import load_digits

    from hwr.data.digits import mnist_style

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)  # (1797, 8, 8), 17 grey levels, ink bright
    images = torch.stack([mnist_style(img) for img in x])
    labels = torch.from_numpy(d.target.astype(np.int64))
    with contextlib.suppress(OSError):  # a read-only root still works, just slower
        files.atomic_write(cache, lambda p: torch.save({"version": version, "images": images, "labels": labels}, p))
    return images, labels


def optdigits_split(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed optdigits split ``(train_idx, test_idx)`` of its 1,797 ``labels``: a balanced test set of
    ``floor(0.3 * N / C)`` images per class drawn with a fixed key, the rest for training."""
    per_class = int(OPTDIGITS_TEST_FRACTION * len(labels) / 10)
    test_idx = splits.balanced_indices(random.key(OPTDIGITS_SPLIT_SEED), labels, per_class)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[test_idx] = False
    return keep.nonzero().squeeze(1), test_idx


def optdigits_val_split(
    labels: torch.Tensor, per_class: int = OPTDIGITS_VAL_PER_CLASS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``(rest, val)`` within the optdigits training pool ``labels``: ``per_class`` images of every class
    drawn with a fixed key for the held-out balanced validation split, the rest for (long-tailed) training."""
    val = splits.balanced_indices(random.fold_in(random.key(OPTDIGITS_SPLIT_SEED), 2), labels, per_class)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().squeeze(1), val


def load(root: Path, base: str, params: dict[str, float]) -> Dataset:
    """``optdigits`` or ``optdigits-lt`` with its full ``params`` (``catalog.parse_name``), on the CPU."""
    images, labels = _all(root)
    pool, test_idx = optdigits_split(labels)
    rest, val = optdigits_val_split(labels[pool], int(params["val"]))
    train_idx, val_idx = pool[rest], pool[val]
    unlabeled = None
    if base == "optdigits-lt":
        k = random.fold_in(random.key(OPTDIGITS_SPLIT_SEED), 1)
        if params.get("draw", 0):  # another draw of images for the same per-class counts (0: today's, bit for bit)
            k = random.fold_in(k, 1000 + int(params["draw"]))
        seed = int(params["order"])
        order = splits.class_order(
            None if seed == 0 else random.fold_in(random.key(OPTDIGITS_SPLIT_SEED), 100 + seed), 10
        )
        drawn = train_idx[splits.long_tail_indices(k, labels[train_idx], params["ratio"], 10, order)]
        left = torch.ones(len(labels), dtype=torch.bool)
        left[drawn] = False
        unlabeled = images[train_idx[left[train_idx]]]  # the pool the draw leaves out: images only, never labels
        train_idx = drawn
    return Dataset(
        _canonical(base, params),
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        DIGITS,
        images[val_idx],
        labels[val_idx],
        unlabeled_images=unlabeled,
    )


def _canonical(base: str, params: dict[str, float]) -> str:
    changed = [f"{k}={v:g}" for k, v in params.items() if v != PARAMS[base][k]]
    return f"{base}:{','.join(changed)}" if changed else base


def write_idx(root: Path) -> Path:
    """Export optdigits (the balanced split and the long-tailed train part) as IDX files for other tools; hwr
    itself recomputes them from scikit-learn's copy, which is fast and cannot go stale."""
    folder = root / "optdigits" / "raw"
    for name, prefix in (("optdigits", ""), ("optdigits-lt", "lt-")):
        ds = load(root, name, PARAMS[name])
        parts = {"train-images-idx3-ubyte": ds.train_images[:, 0], "train-labels-idx1-ubyte": ds.train_labels}
        if not prefix:
            parts |= {
                "t10k-images-idx3-ubyte": ds.test_images[:, 0],
                "t10k-labels-idx1-ubyte": ds.test_labels,
                "val-images-idx3-ubyte": ds.val_images[:, 0],
                "val-labels-idx1-ubyte": ds.val_labels,
            }
        for fname, t in parts.items():
            data = idx.encode(t.to(torch.uint8).numpy())
            path = folder / f"{prefix}{fname}"
            if not path.is_file() or path.read_bytes() != data:
                write(path, data)
    return folder
