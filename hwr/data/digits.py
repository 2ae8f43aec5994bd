"""One real image into MNIST's space, the way MNIST itself was made (LeCun et al.): crop to the ink, fit into a
20x20 box keeping the aspect ratio with an antialiased resize, and centre the ink's centre of mass in a 28x28
field. ``hwr predict`` runs every input file through ``load_image`` then ``mnist_style``; the optdigits source
converts scikit-learn's 8x8 digits with ``mnist_style``.

``load_image`` turns any photo or scan (PNG, JPEG, ...; colour or grey; dark ink on light paper or the reverse)
into a float ink map: greyscale, background level from the median of the border, polarity from the background
(a light ground holds dark ink; on mid-grey, the side that strays furthest), contrast stretched from the
border's noise level to the ink's peak.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from hwr.errors import InputError

__all__ = ["FIELD", "MAX_PIXELS", "conversion_version", "load_image", "mnist_style"]

FIELD, BOX = 28, 20  # MNIST: a 20x20 box centred by mass in a 28x28 field
CENTRE = 14.0  # where MNIST's centres of mass lie on average, in pixel indices (measured: 13.99, 14.01)
MAX_PIXELS = 40_000_000  # refuse larger images before decoding them (a decompression bomb or a mistake)
INK_THRESHOLD = 0.05  # fraction of the peak above which a pixel counts as ink for the bounding box
MIN_CONTRAST = 0.08  # ink peak minus noise floor below this: the image holds no ink


def conversion_version() -> str:
    """A digest of this file, the conversion: it changes whenever ``load_image`` or ``mnist_style`` may give other
    pixels, so caches of converted images (optdigits, a user's folder) keyed by it are made again."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def mnist_style(image: torch.Tensor) -> torch.Tensor:
    """Float ``(H, W)`` ink-bright in ``[0, 1]`` (any size) -> uint8 ``(1, 28, 28)`` as MNIST was made.

    Crops to the bounding box of pixels above ``INK_THRESHOLD`` of the peak, resizes so the longer side is 20
    (antialiased bicubic, aspect kept), rescales the peak to 1, and pastes it so that the centre of mass lies
    at pixel (14, 14) to the nearest pixel (clamped so no ink leaves the field)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 2:
        raise InputError(f"mnist_style takes a 2-D float image (H, W), got {getattr(image, 'shape', type(image))}")
    x = image.detach().cpu().float()
    if not torch.isfinite(x).all():
        raise InputError("image holds NaN or inf pixels")
    x = x.clamp(0.0, 1.0)
    peak = float(x.max())
    if peak <= 0.0:
        raise InputError(f"image of shape {tuple(x.shape)} holds no ink (all pixels are 0)")
    rows = (x > INK_THRESHOLD * peak).any(1).nonzero().squeeze(1)
    cols = (x > INK_THRESHOLD * peak).any(0).nonzero().squeeze(1)
    crop = x[int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]
    h, w = crop.shape
    f = BOX / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    patch = F.interpolate(crop[None, None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    patch = patch[0, 0].clamp(0.0, 1.0)  # (nh, nw)
    patch = patch / patch.max().clamp_min(1e-12)
    mass = patch.sum()
    cy = float((patch.sum(1) * torch.arange(nh)).sum() / mass)
    cx = float((patch.sum(0) * torch.arange(nw)).sum() / mass)
    top = min(max(round(CENTRE - cy), 0), FIELD - nh)
    left = min(max(round(CENTRE - cx), 0), FIELD - nw)
    out = torch.zeros(FIELD, FIELD)
    out[top : top + nh, left : left + nw] = patch
    return (out * 255.0).round().to(torch.uint8)[None]  # (1, 28, 28)


def _open(path: Path) -> Image.Image:
    """Open lazily (header only) and refuse non-images and huge images before any pixel is decoded."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file PIL can read (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: image is too large to decode safely (over {MAX_PIXELS:,} pixels)") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        img.close()
        raise InputError(
            f"{path}: {w}x{h} = {w * h:,} pixels exceeds the {MAX_PIXELS:,}-pixel limit; scale the "
            "image down (a digit needs a few hundred pixels across at most)"
        )
    if w == 0 or h == 0:
        raise InputError(f"{path}: empty image ({w}x{h})")
    return img


def _grey(img: Image.Image) -> np.ndarray:
    """Luminance in ``[0, 1]``, float32 ``(H, W)``; transparency is composited onto a background that contrasts
    with the opaque pixels (dark strokes on white, light strokes on black)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit grey
        a = np.asarray(img, dtype=np.float32)
        span = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        return np.clip(a / span, 0.0, 1.0)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    alpha = rgba[..., 3]
    if alpha.min() < 1.0:
        opaque = alpha > 0.5
        strokes_dark = float(grey[opaque].mean()) < 0.5 if opaque.any() else True
        grey = grey * alpha + (1.0 if strokes_dark else 0.0) * (1.0 - alpha)
    return grey


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """A real image file -> float32 ``(H, W)`` ink map in ``[0, 1]`` (ink bright, background 0).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not an image, is
    larger than ``MAX_PIXELS`` (checked from the header, before decoding), is truncated, or holds no ink."""
    path = Path(path)
    img = _open(path)
    try:
        with img:
            grey = _grey(img)
    except (OSError, SyntaxError, ValueError) as e:  # truncated or malformed pixel data
        raise InputError(f"{path}: cannot decode the image ({e})") from None
    h, w = grey.shape
    b = max(1, round(0.02 * min(h, w)))  # border band: 2% of the short side
    border = np.concatenate([grey[:b].ravel(), grey[-b:].ravel(), grey[:, :b].ravel(), grey[:, -b:].ravel()])
    bg = float(np.median(border))
    # a clearly light (dark) ground holds dark (light) ink; on mid-grey, the ink strays furthest from the ground
    clear = bg > 0.6 or bg < 0.4
    dark_ink = bg > 0.6 if clear else bg - float(grey.min()) >= float(grey.max()) - bg
    if dark_ink:
        ink, border_ink = bg - grey, bg - border
    else:
        ink, border_ink = grey - bg, border - bg
    ink = np.clip(ink, 0.0, None)
    floor = float(np.quantile(np.clip(border_ink, 0.0, None), 0.9))  # the background's noise level
    peak = float(ink.max())
    if peak - floor < MIN_CONTRAST:
        raise InputError(
            f"{path}: no ink found: the image is blank or all background (contrast "
            f"{peak - floor:.3f} < {MIN_CONTRAST}); write the digit darker or crop closer"
        )
    out = np.clip((ink - floor) / (peak - floor), 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(out)
