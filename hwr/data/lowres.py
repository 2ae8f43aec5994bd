"""Low-resolution rescans of a handwriting set (``mnist:lowres=SHARE``): a keyed share of the training images
brought down to a few pixels and back into MNIST's space by ``hwr.data.digits.mnist_style``, the way a coarse
scan reaches the model (optdigits' 8x8 grids of counts, a small digit on a photographed form).

Why: MNIST's 20-pixel strokes never show a model the blocky, blurred shapes such scans make after upscaling, so
a source pretrained on MNIST alone reads them worse than it could. Pretraining on half rescanned images costs
about 0.1 points of MNIST test accuracy and lifts what fine-tuning to optdigits reaches (README *Studies*).
Only the training split changes; the test split is the source's own, untouched. The rescans are cached under the
data root, keyed by the share and the code that makes them, so a second load converts nothing."""

from __future__ import annotations

import contextlib
import hashlib
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

from hwr import files, random
from hwr.data.catalog import Dataset

__all__ = ["LEVELS", "SIZES", "rescan", "rescanned"]

SIZES = (7, 12)  # the digit's longer side at the low resolution, in pixels, drawn uniformly (optdigits: 8)
LEVELS = 16  # grey levels above paper at the low resolution (optdigits counts 0..16 set bits of a 4x4 block)
LOWRES_SEED = 20_261_207  # fixed: the same share always rescans the same images at the same sizes
INK = 0.1  # share of an image's peak above which a pixel counts for the digit's bounding box


def rescan(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(1, 28, 28)`` ink-bright digit -> the same digit rescanned with its longer side at ``size`` pixels
    (area average, ``LEVELS`` grey levels), then brought back by ``mnist_style``; a blank image comes back as is."""
    from hwr.data.digits import mnist_style  # imported when used: the reader pulls in PIL and scipy

    if image.shape != (1, 28, 28) or image.dtype != torch.uint8:
        raise ValueError(f"rescan takes a uint8 (1, 28, 28) image, got {image.dtype} {tuple(image.shape)}")
    if size < 2:
        raise ValueError(f"rescan size must be at least 2 pixels, got {size}")
    x = image[0].float() / 255.0
    ink = x > INK * x.max()
    if not ink.any():
        return image.clone()
    rows, cols = ink.any(1).nonzero().squeeze(1), ink.any(0).nonzero().squeeze(1)
    crop = x[int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]
    h, w = crop.shape
    f = size / max(h, w)
    small = F.interpolate(crop[None, None], size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")[0, 0]
    small = (small * LEVELS).round() / LEVELS
    return mnist_style(small) if small.max() > 0 else image.clone()


def _version() -> str:
    """A digest of this file and of the conversion it calls: cached rescans are made again when either changes."""
    from hwr.data.digits import conversion_version

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12] + conversion_version()


def _choose(n: int, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of ``n`` training images are rescanned (each with probability ``share``) and at what sizes."""
    k_pick, k_size = random.split(random.key(LOWRES_SEED))
    pick = random.bernoulli(k_pick, share, (n,)).nonzero().squeeze(1)
    return pick, random.randint(k_size, (len(pick),), SIZES[0], SIZES[1] + 1)


def _convert(images: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    pick, sizes = _choose(len(images), share)
    if not len(pick):
        return pick, images[:0].clone()
    return pick, torch.stack([rescan(images[i], s) for i, s in zip(pick.tolist(), sizes.tolist(), strict=True)])


def rescanned(ds: Dataset, share: float, cache: Path | None) -> Dataset:
    """``ds`` with a share ``share`` of its training images rescanned at low resolution (``rescan``), chosen and
    sized by a fixed key; ``cache`` (a ``.pt`` file; None: no cache) holds the rescans for the next load."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"lowres share must lie in [0, 1], got {share:g}")
    if share == 0.0 or not len(ds.train_images):
        return ds
    version, n = _version(), len(ds.train_images)
    saved = None
    if cache is not None:
        with contextlib.suppress(OSError, RuntimeError, KeyError, pickle.UnpicklingError, EOFError):
            saved = torch.load(cache, weights_only=True)
    if saved and saved.get("version") == version and saved.get("n") == n and saved.get("share") == share:
        pick, images = saved["pick"], saved["images"]
    else:
        pick, images = _convert(ds.train_images, share)
        if cache is not None:
            record = {"version": version, "n": n, "share": share, "pick": pick, "images": images}
            with contextlib.suppress(OSError):  # a read-only root still works, just slower
                files.atomic_write(cache, lambda p: torch.save(record, p))
    train = ds.train_images.clone()
    train[pick] = images
    return ds._replace(train_images=train)
