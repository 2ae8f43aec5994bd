"""One real image into MNIST's space, the way MNIST itself was made (LeCun et al.): crop to the ink, fit into a
20x20 box keeping the aspect ratio with an antialiased resize, and centre the ink's centre of mass in a 28x28
field. ``hwr predict`` runs every input file through ``load_image`` then ``mnist_style``; the optdigits source
converts scikit-learn's 8x8 digits with ``mnist_style``.

``load_image`` turns any photo or scan (PNG, JPEG, ...; colour or grey; dark ink on light paper or the reverse)
into a float ink map: greyscale, background level from the median of the border, polarity from the background
(a light ground holds dark ink; on mid-grey, the side beyond the levels the border mostly shows), the ground's
shading and its steps (a cast shadow) taken away, the marks a writer adds round a digit (a ring, an underline)
dropped, contrast stretched from the border's noise level to the ink's peak.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pillow_heif
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from hwr.errors import InputError

# HEIC/HEIF, a phone camera's default format: pillow-heif teaches PIL to open it (decoded upright, its EXIF turn
# reset, so ``exif_transpose`` does not turn it twice); AVIF is Pillow's own. Registering is idempotent.
pillow_heif.register_heif_opener()

__all__ = [
    "FIELD",
    "MAX_JPEG_PIXELS",
    "MAX_PIXELS",
    "conversion_version",
    "load_image",
    "load_image_bytes",
    "mnist_style",
]

FIELD, BOX = 28, 20  # MNIST: a 20x20 box centred by mass in a 28x28 field
CENTRE = 14.0  # where MNIST's centres of mass lie on average, in pixel indices (measured: 13.99, 14.01)
MAX_PIXELS = 50_000_000  # refuse larger images before decoding them (a decompression bomb or a mistake); the
# largest photos phones save at full resolution (48-50 MP, HEIC among them) pass
MAX_JPEG_PIXELS = 178_000_000  # a JPEG is decoded at 1/2-1/8 by its decoder (``_grey``), never whole: a 108 MP
# phone photo passes, up to Pillow's own bomb limit (twice ``Image.MAX_IMAGE_PIXELS``)
STROKE_LEVEL = 0.75  # border pixels over this share of the ink's peak are strokes, not ground (``_band_ground``)
WORK_SIDE = 2000  # the long side an image is read at: a digit needs a few hundred pixels, a 12 MP photo is 4000
MIN_SIDE = 28  # a thumbnail's short side is scaled up to this (MNIST's size) before it is read (``_enlarged``)
SMALLEST = 8  # an image under 8x8 holds no digit (optdigits' scans are 8x8): refused, not scaled up to a guess
INK_THRESHOLD = 0.05  # fraction of the peak above which a pixel counts as ink for the bounding box
MIN_CONTRAST = 0.08  # ink peak minus noise floor below this: the image holds no ink
SIDE_RATIO = 3.0  # one side of a smooth ground strays this many times further than the other: the ink's side
NOISE_LEVEL = 1.5 / 255.0  # sensor noise above this (a photo, not a scan) is smoothed before thresholding
GLARE_GAIN = 5.0  # the most contrast a glare's fading is given back (a screen blend of 0.8 over the ink)
GLARE_STEP = 5 / 255.0  # a hot spot's page lies this much over the page's median level, or more
GLARE_PAGE = 0.05  # a page lighter than this (ink-bright: 1 - its grey) shows no glare
GLARE_CONTRAST = 0.75  # a hot spot's lightest paper, ink-bright, against the lightest of the page elsewhere
GLARE_FADED = 0.8  # a glare leaves the ink under it under this share of the strokes' level elsewhere


def conversion_version() -> str:
    """A digest of this file, the conversion, and of the decoders' and filters' versions it runs on (Pillow,
    pillow-heif, NumPy, SciPy): it changes whenever ``load_image`` or ``mnist_style`` may give other pixels (or read
    a file an older decoder refused), so caches of converted images (optdigits, a user's folder, and the bad-file
    verdicts they keep) are made again."""
    import PIL
    import scipy

    libs = f"PIL {PIL.__version__} heif {pillow_heif.__version__} numpy {np.__version__} scipy {scipy.__version__}"
    return hashlib.sha256(Path(__file__).read_bytes() + libs.encode()).hexdigest()[:16]


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
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes): it was not written out, or not copied whole")
    return _open_checked(path, path)


def _open_checked(source: Path | BinaryIO, path: object) -> Image.Image:
    """``Image.open(source)`` lazily (header only), refusing non-images and huge images before any pixel is
    decoded; each message starts with ``path`` (a file's path, or the name of bytes held in memory)."""
    try:
        with warnings.catch_warnings():  # the size is checked below, by format, before any pixel is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
    except UnidentifiedImageError:
        raise InputError(
            f"{path}: not an image file PIL can read (PNG, JPEG, HEIC, AVIF, BMP, GIF, TIFF, WebP, ...)"
        ) from None
    except Image.DecompressionBombError:
        raise InputError(f"{path}: image is too large to decode safely (over {MAX_JPEG_PIXELS:,} pixels)") from None
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as e:  # a header cut short or malformed: PIL's plugins raise OSError, SyntaxError, ValueError,
        raise _undecodable(path, e) from None  # and RuntimeError (AVIF), TypeError, IndexError, EOFError, ...
    w, h = img.size
    limit = MAX_JPEG_PIXELS if img.format in ("JPEG", "MPO") else MAX_PIXELS
    if w * h > limit:
        img.close()
        raise InputError(
            f"{path}: {w}x{h} = {w * h:,} pixels exceeds the {limit:,}-pixel limit for {img.format or 'such'} "
            "files; scale the image down (a digit needs a few hundred pixels across at most)"
        )
    if w == 0 or h == 0:
        raise InputError(f"{path}: empty image ({w}x{h})")
    return img


def _grey(img: Image.Image) -> np.ndarray:
    """Luminance in ``[0, 1]``, float32 ``(H, W)`` at most ``WORK_SIDE`` pixels on the long side (a phone's photo
    is decoded at a half or a quarter by the JPEG decoder itself, other large files averaged down in blocks);
    transparency is composited onto a background that contrasts with the opaque pixels (dark strokes on white,
    light strokes on black)."""
    w, h = img.size
    if img.format in ("JPEG", "MPO") and max(w, h) > WORK_SIDE:  # the decoder scales by 1/2, 1/4, 1/8 for free
        img.draft(None, (math.ceil(w * WORK_SIDE / max(w, h)), math.ceil(h * WORK_SIDE / max(w, h))))
    return _reduced(_luminance(_shrunk(_upright(img))))


def _shrunk(img: Image.Image) -> Image.Image:
    """A very large picture (over ``4 * WORK_SIDE**2`` pixels; JPEGs are drafted smaller by their decoder) averaged
    down in 8 bits by ``_reduced``'s block size before it becomes float: a 6300x6300 PNG would otherwise take about
    2 GB as RGBA floats (a 70 KB upload to ``hwr serve``). Smaller pictures, every phone photo among them, pass as
    they are; 16-bit and float pictures too (``_luminance`` scales their range)."""
    w, h = img.size
    k = min(math.ceil(max(w, h) / WORK_SIDE), max(1, min(w, h) // 16))
    if w * h <= 4 * WORK_SIDE**2 or k <= 1 or img.mode.startswith("I") or img.mode == "F":
        return img
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA")  # palette, CMYK, 1-bit: to 8-bit channels (transparency kept as alpha)
    return img.reduce(k)


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says; as stored where the EXIF block is corrupt (a phone app or an
    editor that wrote it badly): the pixels are still the photo."""
    try:
        return ImageOps.exif_transpose(img)
    except (struct.error, ValueError, TypeError, KeyError, SyntaxError, OSError):
        return img


def _reduced(grey: np.ndarray) -> np.ndarray:
    """``grey`` averaged in ``k x k`` blocks, the smallest ``k`` that brings its long side to ``WORK_SIDE`` or
    under (unchanged when it is there already), but never to under 16 pixels on its short side (a strip)."""
    k = min(math.ceil(max(grey.shape) / WORK_SIDE), max(1, min(grey.shape) // 16))
    if k <= 1:
        return grey
    h, w = grey.shape[0] // k * k, grey.shape[1] // k * k
    return grey[:h, :w].reshape(h // k, k, w // k, k).mean((1, 3), dtype=np.float32)


def _luminance(img: Image.Image) -> np.ndarray:
    """``_grey`` at the file's own size."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit grey
        a = np.asarray(img, dtype=np.float32)
        finite = np.isfinite(a)
        if not finite.all():  # a float file's NaN or infinite pixels (a failed division upstream): the median level
            a = np.where(finite, a, np.median(a[finite]) if finite.any() else 0.0).astype(np.float32)
        top = max(float(a.max()), 1.0)
        # 16-bit files: the full scale of the bits in use (a 10- or 12-bit scanner's 0..4095 is not a dark image)
        span = float(2 ** max(8, math.ceil(math.log2(top + 1))) - 1) if img.mode.startswith("I;16") else top
        return np.clip(a / span, 0.0, 1.0)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    alpha = rgba[..., 3]
    if alpha.min() < 1.0:
        opaque = alpha > 0.5
        strokes_dark = float(grey[opaque].mean()) < 0.5 if opaque.any() else True
        grey = grey * alpha + (1.0 if strokes_dark else 0.0) * (1.0 - alpha)
    return grey


def _page(grey: np.ndarray) -> np.ndarray | None:
    """Where the image is a light sheet on a darker surround (paper photographed on a desk, a card in a scanner's
    dark lid): the sheet alone, cut to its box (trimmed by 3% a side) with the surround painted the sheet's
    level, else None. Without this the dark border makes the sheet read as light ink on a dark ground and the
    whole page becomes the glyph.

    A sheet is the largest light region (Otsu's split, its holes filled) that covers 30% of the image or more,
    fills the smallest rectangle round it at any angle (88%: a filled 0 or 8 does not) or, shot at an angle and
    wholly in the picture, the quadrilateral of its corners (``_whole_quad``), lies inside most of the
    border band rather than along it, is clearly lighter than the surround (0.2), and holds writing: dark holes
    (0.1-35% of it: a pen digit a sixth of a page high is 0.15%) that are strokes, their area at least 12 times
    the square of their greatest half-width (a stroke of half-width r and length L has 2rL). A bold light glyph
    on a dark ground fails there: its holes are counters, compact blobs of 4-11 r squared. Writing that runs off
    the sheet's edge joins the surround and is painted over with it (a digit running off a sticky note)."""
    if min(grey.shape) < 16:
        return None
    # found on a view of about 400 pixels (a page is large), never under 100 across (a strip's strokes stay)
    step = max(1, min(round(max(grey.shape) / 400), min(grey.shape) // 100))
    full, grey = grey, grey[::step, ::step]
    h, w = grey.shape
    raw = grey > _otsu(grey, 1.0)
    labels, n = ndimage.label(ndimage.binary_fill_holes(raw))
    if n == 0:
        return None
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    k = int(np.argmax(area)) + 1
    ys, xs = ndimage.find_objects(labels)[k - 1]
    region = labels == k
    holes = region & ~raw  # the writing
    b = max(1, round(0.02 * min(h, w)))
    ring = np.ones((h, w), bool)
    ring[b:-b, b:-b] = False
    if (
        area[k - 1] < 0.3 * h * w
        or not 0.001 <= holes.sum() / area[k - 1] <= 0.35
        or region[ring].mean() > 0.5
        or float(np.median(grey[region])) - float(np.median(grey[ring & ~region])) < 0.2
        or holes.sum() < 12.0 * max(float(ndimage.distance_transform_edt(holes).max()), 1.0) ** 2
        or (area[k - 1] < 0.88 * _min_rectangle(region) and not _whole_quad(region, ring, holes))
    ):
        return None
    dy, dx = max(1, round(0.03 * (ys.stop - ys.start))), max(1, round(0.03 * (xs.stop - xs.start)))
    box = slice(step * (ys.start + dy), step * (ys.stop - dy)), slice(step * (xs.start + dx), step * (xs.stop - dx))
    inner = ndimage.binary_erosion(region) if step > 1 else region  # no block of desk along a turned edge
    sheet = np.repeat(np.repeat(inner, step, 0), step, 1)[: full.shape[0], : full.shape[1]]
    return np.where(sheet[box], full[box], float(np.median(grey[region & raw])))


def _min_rectangle(mask: np.ndarray) -> float:
    """The area of the smallest rectangle round ``mask`` at any angle (whole degrees), in pixels."""
    edge = mask & ~ndimage.binary_erosion(mask)
    y, x = np.nonzero(edge)
    t = np.deg2rad(np.arange(90))[:, None]
    u, v = x * np.cos(t) + y * np.sin(t), y * np.cos(t) - x * np.sin(t)
    return float((((u.max(1) - u.min(1)) + 1) * ((v.max(1) - v.min(1)) + 1)).min())


def _whole_quad(region: np.ndarray, ring: np.ndarray, holes: np.ndarray) -> bool:
    """A sheet shot at an angle: wholly inside the picture, clear of the border band (the lit part between two
    shadows meets the border), filling its corners' quadrilateral to within 8%, and written on sparsely (dark
    holes under 10% of it: a bold chalk 0 slanted into a parallelogram has a counter of 15-30%)."""
    area = float(region.sum())
    return not region[ring].any() and holes.sum() < 0.1 * area and abs(area / _corner_quad(region) - 1) <= 0.08


def _corner_quad(mask: np.ndarray) -> float:
    """The area of the quadrilateral through ``mask``'s extreme points in four directions (the axes, or the
    diagonals: the larger of the two), in pixels. A sheet shot at an angle, a trapezoid that fills 80-88% of any
    rectangle round it, fills its own corners' quadrilateral to within a few percent; a filled 0 spills 57% past
    it (a circle round its inscribed square), an 8 more."""
    y, x = np.nonzero(mask & ~ndimage.binary_erosion(mask))
    if len(x) < 4:
        return float(mask.sum())
    best = 0.0
    for t in (0.0, np.pi / 4):
        u = np.array([np.cos(t + q * np.pi / 2) for q in range(4)])
        v = np.array([np.sin(t + q * np.pi / 2) for q in range(4)])
        i = np.argmax(x[None, :] * u[:, None] + y[None, :] * v[:, None], axis=1)  # one extreme point a direction
        px, py = x[i].astype(np.float64), y[i].astype(np.float64)
        best = max(best, 0.5 * abs(float(np.dot(px, np.roll(py, -1)) - np.dot(py, np.roll(px, -1)))))
    return best


def _ink_side(grey: np.ndarray, border: np.ndarray) -> tuple[bool, float]:
    """``(dark_ink, ground)``: the ground is the border's median; a clearly light ground holds dark ink and a
    near-black one light ink. Between them (mid-grey, and dim paper: an underexposed photo's sheet at 0.3 with
    its ink at 0.07; a lamp's pool of light or a lens's strong vignetting, the page bright in the middle and dim
    at its rim) the ink is on the side that strays ``SIDE_RATIO`` times further from a smooth ground fitted to the
    whole picture than the other (``_shaded_side``); failing that (strokes filling much of a tight crop: the fit
    is no ground) on the side that goes clearly beyond the levels the border mostly shows (its 10th-90th
    percentiles: a cast shadow over half the border shows two grounds, the paper's and the shadow's, whose median
    is neither; a stroke running off the edge is a few percent of it) by a quarter of the image's range, else on
    the side that strays furthest from the median (strokes fill the border, as in a crop to the ink's box)."""
    bg = float(np.median(border))
    if bg > 0.6 or bg < 0.15:
        return bg > 0.6, bg
    shaded = _shaded_side(grey)
    if shaded is not None:
        return shaded, bg
    lo, hi = np.quantile(border, [0.1, 0.9])
    below, above = float(lo) - float(grey.min()), float(grey.max()) - float(hi)
    if abs(below - above) >= MIN_CONTRAST and max(below, above) >= 0.25 * float(grey.max() - grey.min()):
        return below > above, bg
    return bg - float(grey.min()) >= float(grey.max()) - bg, bg


def _shaded_side(grey: np.ndarray) -> bool | None:
    """True (dark ink) or False (light ink) where the picture reaches ``SIDE_RATIO`` times further below a smooth
    ground than above it, or the other way round; None where neither side is that clear. The ground is a cubic
    surface fitted to most of the picture (``_cubic_ground``, both tails trimmed), so light that falls off
    smoothly towards the rim adds nothing to either side, while thin strokes stand out on theirs. A bold digit
    filling a tight crop has no such ground, and its counters stray as far as its strokes: None."""
    r = grey - _cubic_ground(grey, both=True)
    below, above = float(-r.min()), float(r.max())
    if max(below, above) < MIN_CONTRAST or max(below, above) < SIDE_RATIO * min(below, above):
        return None
    return below > above


def _band(a: np.ndarray, b: int) -> np.ndarray:
    """The values of ``a`` in its border band ``b`` pixels wide (the corners twice), flat."""
    return np.concatenate([a[:b].ravel(), a[-b:].ravel(), a[:, :b].ravel(), a[:, -b:].ravel()])


def _band_ground(band: np.ndarray, peak: float) -> np.ndarray:
    """The border band's ink-bright values that are ground: all of them (a cast shadow or a grid reaching the
    border stays ground, under the floor and inside the shading's range), unless strokes reach the band (1% of it
    or more at the ink's own level, over ``STROKE_LEVEL`` of the image's ``peak``: a crop to the ink's box puts
    them in a fifth to half of it), whose level is no ground: then those within 4 robust sigmas of its median."""
    if np.mean(band > STROKE_LEVEL * peak) < 0.01:
        return band
    return band[band <= float(np.median(band)) + 4.0 * _robust_sigma(band)]


def _noise_sigma(x: np.ndarray) -> float:
    """The sensor noise's standard deviation (Immerkaer's Laplacian-difference estimate, made robust to strokes
    with the median: a clean image or a scan gives 0)."""
    if min(x.shape) < 3:
        return 0.0
    lap = x[:-2, :-2] - 2 * x[:-2, 1:-1] + x[:-2, 2:] - 2 * x[1:-1, :-2] + 4 * x[1:-1, 1:-1]
    lap = lap - 2 * x[1:-1, 2:] + x[2:, :-2] - 2 * x[2:, 1:-1] + x[2:, 2:]
    return float(1.4826 * np.median(np.abs(lap)) / 6.0)  # the kernel's L2 norm is 6


def _robust_sigma(v: np.ndarray) -> float:
    """Standard deviation of the bulk of ``v`` (scaled median absolute deviation)."""
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _cubic_ground(x: np.ndarray, both: bool) -> np.ndarray:
    """A cubic surface fitted to the ground of ``x`` on a grid of samples, outliers trimmed over a few rounds: those
    above it (ink-bright ink), or ``both`` sides (when which side the ink is on is not known yet: the ground is
    what most of the picture shows). Evaluated at every pixel."""
    h, w = x.shape
    step = max(1, round(max(h, w) / 96))
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    v = x[::step, ::step].ravel().astype(np.float64)
    u, t = (xs.ravel() / max(w - 1, 1)) * 2 - 1, (ys.ravel() / max(h - 1, 1)) * 2 - 1
    basis = np.stack([u**i * t**j for i, j in _powers()], 1)
    keep = np.ones(v.shape, bool)
    for _ in range(8):
        coef = np.linalg.lstsq(basis[keep], v[keep], rcond=None)[0]
        r = v - basis @ coef
        s = max(_robust_sigma(r[keep]), 1e-3)
        nxt = (np.abs(r) if both else r) < 2.5 * s  # trim the ink, keep the ground's own scatter
        if nxt.sum() < basis.shape[1] * 4 or np.array_equal(nxt, keep):
            break
        keep = nxt
    uu, tt = np.linspace(-1, 1, w), np.linspace(-1, 1, h)
    return sum(c * tt[:, None] ** j * uu[None, :] ** i for c, (i, j) in zip(coef, _powers()))


def _illumination(d: np.ndarray) -> np.ndarray | None:
    """The ground's smooth shading under ink-bright ``d`` (uneven light, vignetting): ``_cubic_ground`` with the
    ink above it trimmed away. ``None`` when the fit is flat (under 2 grey levels across): the ground is then one
    level, as on a scan."""
    surface = _cubic_ground(d, both=False)
    return None if float(surface.max() - surface.min()) < 2.0 / 255.0 else surface.astype(np.float32)


def _ground_shading(d: np.ndarray, b: int) -> np.ndarray | None:
    """``_illumination`` of ink-bright ``d``, held inside the levels the border band (``b`` pixels) shows: light
    falls off smoothly from the page's edge inwards, so the ground inside never lies beyond what its border shows,
    while a cubic surface will bulge into a bold digit that fills the frame (a marker stroke, a tight crop) and
    eat its ink. A border of one level (a scan, a digital image) has no shading at all: ``None``. The trade: a
    shadow in the middle of the page, darker than anything on its border, is only partly taken away."""
    ring = _band_ground(_band(d, b), float(d.max()))
    lo, hi = np.quantile(ring, [0.05, 0.95])
    if hi - lo < 2.0 / 255.0:
        return None
    shade = _illumination(d)
    return None if shade is None else np.clip(shade, lo, hi)


def _stepped(d: np.ndarray, ground: np.ndarray | float) -> np.ndarray | None:
    """``ground`` raised to the steps of the ground that a smooth shading cannot follow (the edge of a cast
    shadow, a fold): the grey opening of ink-bright ``d`` by a square a quarter of the long side wide takes away
    every stroke narrower than that and keeps straight edges and ramps of the ground as they are. Raised only
    where the opening lies over ``ground`` by ``MIN_CONTRAST / 2`` below the ink's level (``STROKE_LEVEL`` of the
    peak: a bold stroke wider than the square, in a tight crop, is ink, not ground) in regions that reach the
    image's edge (a shadow is cast from outside the picture), 1% of the image or more; else None."""
    w = max(3, max(d.shape) // 4)
    g = ndimage.grey_opening(d, size=(w, w), mode="nearest")
    lift = (g - ground > MIN_CONTRAST / 2) & (g < STROKE_LEVEL * float(d.max()))
    labels, _ = ndimage.label(lift)
    edge = np.unique(_band(labels, 1))
    lift = np.isin(labels, edge[edge > 0])
    if lift.mean() < 0.01:
        return None
    # the opening leaves the rim of a rounded region (a thumb's end) that the square cannot fill: up to half the
    # square away, the ground rises to the region's level wherever the image reaches that level
    reach = ndimage.grey_dilation(np.where(lift, g, 0.0), size=(w // 2 + 1, w // 2 + 1), mode="nearest")
    rim = ~lift & (d >= reach - MIN_CONTRAST / 2)  # at the region's own level, not a fainter stroke beside it
    return np.maximum(ground, np.where(lift, g, np.where(rim, np.minimum(d, reach), 0.0)))


def _deglared(d: np.ndarray, ink: np.ndarray) -> np.ndarray | None:
    """Dark ink's contrast given back where glare fades it, or None where there is no glare. Glare on
    glossy paper (a lamp's hot spot) lightens paper and ink alike, as a screen blend does: ink-bright ``d`` is
    scaled by ``1 - m`` under a glare of strength ``m``, ink and paper together, so the paper's level there against
    the page's median level measures the fading. The paper's level is the grey opening of ``d`` by a square three
    strokes wide (no stroke survives it), smoothed; under the glare the ink is read against it and scaled back, up
    to ``GLARE_GAIN``. A glare is a hot spot (``_hot_spots``); a white page shows none (on paper near white a glare
    cannot lighten the page measurably), nor does light that changes across the page: that reaches the border and
    is ``_ground_shading``'s and ``_stepped``'s."""
    if not ink.max() > 0:
        return None
    core = ink > _otsu(ink, float(ink.max()))
    w = int(np.clip(3.0 * _stroke_width(core), 5, max(d.shape) // 4))
    k = max(1, w // 4)  # the page's light is smooth: found on blocks a quarter of w wide, a sixteenth of the work
    paper = _paper_level(d, w, k)
    ref = float(np.median(paper))
    if ref < GLARE_PAGE:
        return None
    gain = np.clip(ref / np.maximum(paper, 1e-3), 1.0, GLARE_GAIN)
    spots = _hot_spots(paper, (gain > 1.5) & (ref - paper > GLARE_STEP), max(1, w // k))
    if not spots.any():
        return None
    spots = np.repeat(np.repeat(spots, k, 0), k, 1)[: d.shape[0], : d.shape[1]]
    full = _faded(ink, core, spots, w)
    if full is None:
        return None
    paper = ndimage.zoom(paper, k, order=1, mode="nearest", grid_mode=True)[: d.shape[0], : d.shape[1]]
    gain = np.clip(ref / np.maximum(paper, 1e-3), 1.0, GLARE_GAIN)
    back = np.minimum(np.clip(d - paper, 0.0, None) * gain, full)  # never past the strokes' level elsewhere
    return np.where(_grown(spots, w) & (gain > 1.05), np.maximum(ink, back), ink)


def _paper_level(d: np.ndarray, w: int, k: int) -> np.ndarray:
    """The page's own level under ink-bright ``d``, on blocks ``k`` pixels on a side: the grey opening by a square
    ``w`` wide (no narrower stroke survives it; each block's least value first, so the opening is that of ``d``),
    smoothed by a box of that width twice (near a Gaussian of ``w / 2.5``)."""
    rows = np.minimum.reduceat(d, np.arange(0, d.shape[0], k), axis=0)  # each block's least value
    blocks = np.minimum.reduceat(rows, np.arange(0, d.shape[1], k), axis=1)
    m = max(1, round(w / k))
    level = ndimage.grey_opening(blocks, size=(m, m), mode="nearest")
    for _ in range(2):
        level = ndimage.uniform_filter(level, size=m, mode="nearest")
    return level


def _grown(mask: np.ndarray, w: int) -> np.ndarray:
    """``mask`` grown by ``w`` pixels (a square: separable, so as fast for a wide ``w`` as a narrow one)."""
    return ndimage.maximum_filter(mask, size=2 * w + 1, mode="constant")


def _faded(ink: np.ndarray, core: np.ndarray, spots: np.ndarray, w: int) -> float | None:
    """The strokes' level (95th percentile) beyond ``w`` of ``spots`` (the ink's peak where every stroke is that
    near) if the ink under ``spots`` is there but faded: its own level between 15% and ``GLARE_FADED`` of that;
    else None."""
    far = core & ~_grown(spots, w)
    full = float(np.quantile(ink[far], 0.95)) if far.any() else float(ink.max())
    return full if 0.15 * full < float(np.quantile(ink[spots], 0.95)) < GLARE_FADED * full else None


def _hot_spots(paper: np.ndarray, lit: np.ndarray, w: int) -> np.ndarray:
    """The parts of ``lit`` that are hot spots: inside the picture (clear of its border band), 0.2-25% of it, and
    the brightest of the page: their lightest paper (ink-bright ``paper``, low is light) under ``GLARE_CONTRAST``
    times the lightest paper farther than ``w`` from them."""
    labels, n = ndimage.label(lit)
    edge = set(np.unique(_band(labels, max(1, round(0.02 * min(paper.shape))))).tolist())
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    out = np.zeros(paper.shape, bool)
    for k in range(1, n + 1):
        if k in edge or not 0.002 * paper.size <= sizes[k] <= 0.25 * paper.size:
            continue
        spot = labels == k
        far = ~_grown(spot, w)
        if far.any() and paper[spot].min() < GLARE_CONTRAST * paper[far].min():
            out |= spot
    return out


def _powers() -> list[tuple[int, int]]:
    """The monomials ``u**i * t**j`` of the cubic ground surface, in ``_illumination``'s order."""
    return [(i, j) for i in range(4) for j in range(4 - i)]


def _otsu(v: np.ndarray, top: float) -> float:
    """Otsu's threshold of the values ``v`` in ``[0, top]`` (256 bins)."""
    hist, edges = np.histogram(v, bins=256, range=(0.0, top))
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m = np.cumsum(p * centres)
    between = (m[-1] * w0 - m) ** 2 / np.clip(w0 * (1 - w0), 1e-12, None)
    return float(centres[int(np.argmax(between))])


def _is_rule(mask: np.ndarray, sides: int, shape: tuple[int, int]) -> bool:
    """A component that is a ruled or pen line across the page, or lines joined (it touches two sides of the image
    and is straight, or drawn thin: ``_line_like``), or a printed form box (nearly all of its pixels lie in a thin
    band along its own bounding box). In a crop to the ink's box every stroke touches a side, and a digit's part
    that touches two (a 5's body below its separate bar) is neither."""
    h, w = mask.shape
    if sides >= 2 and _line_like(mask, min(shape)):
        return True
    if h < 0.25 * shape[0] or w < 0.25 * shape[1] or min(h, w) < 8:
        return False
    band = max(2, round(0.1 * min(h, w)))
    inner = mask[band:-band, band:-band].sum()
    return bool(inner <= 0.1 * mask.sum())


def _disc(mask: np.ndarray) -> float:
    """The diameter of the widest disc inside ``mask`` (twice the largest distance to its outside)."""
    return 2.0 * float(ndimage.distance_transform_edt(np.pad(mask, 1)).max())


def _line_like(mask: np.ndarray, short_side: int) -> bool:
    """Straight (the pixels' spread across their main axis under a fifth of that along it: a rule, a pen line of
    any width, in an image of any size) or drawn thin (a stroke, twice the area over the perimeter, under 6% of
    the image's short side: lines joined with a form box). A digit's own strokes in a crop to its ink are
    neither: curved, and a tenth of its size wide or more."""
    return _straight(mask) or _stroke_width(mask) < 0.06 * short_side


def _straight(mask: np.ndarray) -> bool:
    """The pixels' spread across their main axis is under a fifth of that along it (a line, of any width)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 3:
        return True
    minor, major = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    return bool(major > 0 and minor <= 0.04 * major)


def _stroke_width(mask: np.ndarray) -> float:
    """Twice the area over the perimeter: the width of a stroke (exact for a long band)."""
    return 2.0 * float(mask.sum()) / max(int((mask & ~ndimage.binary_erosion(mask)).sum()), 1)


def _lines_across(core: np.ndarray, string: bool = False) -> np.ndarray:
    """The pixels of ``core`` on straight lines that run across the whole image within 4 degrees of level or
    upright (the rule a digit was written on, a form's line) where the line touches the writing, except where a
    stroke crosses them. Such a rule makes one component with the digit, and the whole line was taken for the
    glyph; with the line's pixels gone the digit stands alone, and with the crossings kept it stays whole (a
    crossing: ink 3 pixels past the line's band, in a run of columns no wider than 15% of the image; a parallel
    edge along it is longer). Only in a component whose ink off the line spans at most 70% of the line's
    direction and stays clear of its ends (15% of the breadth each side), as a digit on a rule does: a line alone
    (or with its own ragged edge) is left whole for ``_glyph`` to drop, and in a tight crop a digit's own stroke
    runs edge to edge with the rest of the digit at one end of it (a 7's bar, a 4's stem, a flagged 1).

    ``string``: the image holds a string of characters written along its level lines, and no character's stroke
    runs across a whole string, so a level line is taken out of a component whatever the span of the rest (the
    rule under a postal code or an amount), where that rest is writing on the line (``_writing_on``). Upright
    lines keep the digit rule (a 1 of a tight crop)."""
    out = np.zeros_like(core)
    labels, _ = ndimage.label(core, structure=np.ones((3, 3), bool))
    lines = {False: _level_lines(core), True: _level_lines(core.T)}  # level, upright (transposed)
    fringe = np.ones((5, 1), bool)
    for upright in (False, True):
        c, lab = (core.T, labels.T) if upright else (core, labels)
        band = ndimage.binary_dilation(lines[upright], structure=fringe) & c  # with its fringe rows
        # the lines across the other way are no writing either: squared paper's lattice is lines both ways
        across = ndimage.binary_dilation(lines[not upright].T, structure=fringe.T) & c
        on = _writing_on(c, lab, band, lines[True].T) if string and not upright else set()
        for k in np.unique(lab[band]):
            rest = np.flatnonzero(_span_pieces((lab == k) & ~band & ~across).any(0)) / c.shape[1]
            if k in on:
                continue  # a string written on its rule: the rule goes wherever the writing touches it
            if not len(rest) or rest[-1] - rest[0] > 0.7 or rest[0] < 0.15 or rest[-1] > 0.85:
                band &= lab != k  # a line alone, a string's rule, or a digit's own stroke of a tight crop
        band = _uncrossed(c, band, across) if band.any() else band
        out |= band.T if upright else band
    return out


def _span_pieces(rest: np.ndarray) -> np.ndarray:
    """``rest`` less its small pieces (under 2% of it) and its straight pieces that touch the image's edge: what
    is left of a lattice's lines once they are found. On squared paper turned a little, the line nearest an edge
    leaves the image part way across, so no line was found in it, and a line's pixels just outside its fringe
    stay behind in bits; joined to the lattice, either made the rest of the lattice's component span the image as
    no digit on a line does."""
    pieces, _ = ndimage.label(rest, structure=np.ones((3, 3), bool))
    out = rest.copy()
    small = 0.02 * rest.sum()
    for j, (ys, xs) in enumerate(ndimage.find_objects(pieces), start=1):
        piece = pieces[ys, xs] == j
        edge = ys.start == 0 or xs.start == 0 or ys.stop == rest.shape[0] or xs.stop == rest.shape[1]
        if piece.sum() < small or (edge and _straight(piece)):
            out[ys, xs] &= ~piece
    return out


def _uncrossed(c: np.ndarray, band: np.ndarray, across: np.ndarray) -> np.ndarray:
    """``band``'s level lines less their crossings: on each line, the columns where a stroke of ``c`` goes on 3
    pixels past that line (in a run of columns no wider than 15% of the image: a parallel edge along it is
    longer) or lies on both sides of it (a bold stroke running along the line, whatever its length: taking the
    line out split it lengthwise), and 2 columns each side, stay ink. Line by line: a stroke crossing one line
    of squared paper keeps no other line's pixels in its columns (it kept stubs of every upright line level with a
    digit, which the digit then took in as strokes of its own); the ``across`` lines are no stroke."""
    lab, _ = ndimage.label(band, structure=np.ones((3, 3), bool))
    free = c & ~band & ~across
    out = band.copy()
    for j, (ys, _) in enumerate(ndimage.find_objects(lab), start=1):
        rows = slice(max(ys.start - 3, 0), ys.stop + 3)  # the line's rows and the 3 past it each side
        line = lab[rows] == j
        below, above = np.zeros_like(line), np.zeros_like(line)
        below[3:], above[:-3] = line[:-3], line[3:]
        below, above = (below & free[rows]).any(0), (above & free[rows]).any(0)
        runs, m = ndimage.label(below | above)
        width = np.bincount(runs, minlength=m + 1)
        narrow = (width <= max(3.0, 0.15 * c.shape[1])) & (np.arange(m + 1) > 0)
        out[rows] &= ~(line & ndimage.binary_dilation(narrow[runs] | (below & above), iterations=2)[None, :])
    return out


def _writing_on(c: np.ndarray, lab: np.ndarray, band: np.ndarray, upright: np.ndarray) -> set[int]:
    """The labels of the components of ``c`` that are writing on the level line ``band``: the line runs on past
    the rest of the component on both sides by twice its thickness (in a tight crop of "77" or "22" the bars
    or feet end where the rest ends, as a wavy line's wobble does), the rest reaches 10% of the image's height
    away from the line, row by row of its tilt (a ragged edge stays near it), and holds none of the ``upright``
    lines across the image (a form box's sides)."""
    cols = np.flatnonzero(band.any(0))
    if not len(cols):
        return set()
    ys = np.arange(c.shape[0])[:, None]
    x = np.arange(c.shape[1])
    reach = 0.1 * c.shape[0]
    lo = np.interp(x, cols, np.where(band[:, cols], ys, c.shape[0]).min(0)) - reach
    hi = np.interp(x, cols, np.where(band[:, cols], ys, -1).max(0)) + reach
    far = (ys < lo[None, :]) | (ys > hi[None, :])
    on = set()
    for k in np.unique(lab[band]).tolist():
        own = lab == k
        line, rest = own & band, own & ~band
        span, used = np.flatnonzero(line.any(0)), np.flatnonzero(rest.any(0))
        if not len(used) or (own & upright).any() or not (rest & far).any():
            continue
        thick = line.sum() / max(len(span), 1)
        if used[0] - span[0] >= 2 * thick and span[-1] - used[-1] >= 2 * thick:
            on.add(k)
    return on


def _level_lines(c: np.ndarray) -> np.ndarray:
    """The pixels of ``c`` on straight lines within 4 degrees of level (17 slopes, 0.5 degrees apart) whose pixels
    fill 80% of the image's width and reach within 5% of both its edges: at one offset of a slope, or, for a thin
    line between two slopes (squared paper turned a little: across 1,750 pixels a line 0.25 degrees off a slope
    drifts 8 pixels, and no one offset holds it), in a band of offsets as wide as that drift, to which the line is
    then fitted (``_fitted``)."""
    w = c.shape[1]
    band = np.zeros_like(c)
    ys, xs = np.nonzero(c)
    if w < 24 or len(xs) < 0.8 * w:
        return band
    drift = math.ceil(w * math.tan(math.radians(0.25)))  # across the image, half a slope's step off
    for t in np.tan(np.deg2rad(np.arange(-4.0, 4.25, 0.5))):
        rho = np.round(ys - xs * t).astype(np.int64)
        lo = int(rho.min())
        counts = np.bincount(rho - lo)
        for r in np.flatnonzero(counts >= 0.8 * w) + lo:
            on = rho == r
            if xs[on].min() <= 0.05 * w and xs[on].max() >= 0.95 * w:
                band[ys[on], xs[on]] = True
        if drift < 2:
            continue
        held = np.convolve(counts, np.ones(drift + 1, np.int64), "valid")
        runs, _ = ndimage.label(held >= 0.8 * w)
        for (s,) in ndimage.find_objects(runs):  # offsets s.start .. s.stop - 1 + drift hold 80% of the width
            for a, b in _windows(held, s, drift):
                near = (rho >= a + lo) & (rho < b + lo)
                if not band[ys[near], xs[near]].all():
                    band |= _fitted(ys[near], xs[near], ys, xs, c.shape)
    return band


def _windows(held: np.ndarray, run: slice, drift: int) -> list[tuple[int, int]]:
    """The offset windows ``[a, b)`` of a run of offsets whose ``drift + 1`` wide windows each hold 80% of the
    width (``held``): the whole run's span, or, where the run is over twice a window long (two lines of a lattice
    with a string's ink between them keep every window between them full, and one fit to both lines and the
    string finds neither), a window round each peak of ``held``, the fullest first, none within ``drift`` of
    another: one line each."""
    if run.stop - run.start <= 2 * (drift + 1):
        return [(run.start, run.stop + drift)]
    order = run.start + np.argsort(-held[run], kind="stable")
    picked: list[int] = []
    for a in order.tolist():
        if all(abs(a - p) > drift for p in picked):
            picked.append(a)
    return [(a, a + drift + 1) for a in sorted(picked)]


def _fitted(ys: np.ndarray, xs: np.ndarray, all_ys: np.ndarray, all_xs: np.ndarray, shape: tuple) -> np.ndarray:
    """The line through the pixels ``ys, xs`` (a band along a line nearly level) as a mask of ``shape``: fitted to
    each column's middle pixel, columns more than 2 pixels off dropped (a stroke crossing), as thick as its median
    column; the pixels of ``all_ys, all_xs`` that near it, where they fill 80% of the width and reach within 5%
    of both edges (else nothing)."""
    w = shape[1]
    out = np.zeros(shape, bool)
    order = np.lexsort((ys, xs))  # by column, then row
    cols, first, per = np.unique(xs[order], return_index=True, return_counts=True)
    if len(cols) < 0.8 * w:
        return out
    mid = ys[order][first + per // 2].astype(np.float64)  # each column's middle row
    keep = np.ones(len(cols), bool)
    for _ in range(3):
        slope, at = np.polyfit(cols[keep], mid[keep], 1)
        keep = np.abs(mid - (at + slope * cols)) <= 2.0
        if keep.sum() < 0.8 * w:
            return out
    near = np.abs(all_ys - (at + slope * all_xs)) <= float(np.median(per[keep])) / 2 + 1.0
    x = all_xs[near]
    if len(np.unique(x)) >= 0.8 * w and x.min() <= 0.05 * w and x.max() >= 0.95 * w:
        out[all_ys[near], x] = True
    return out


def _glyph(
    core: np.ndarray, string: bool = False, ink: np.ndarray | None = None, carve: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(glyph, marks)``: the components of the binary ``core`` that form the glyph, and the marks round it that
    were dropped from it (``_marks``: a ring round a single digit, a line under it). Ruled lines, pen lines across
    the page and form boxes are dropped when something else of weight is left, a thumb at the edge is cut away
    (``_blobs``, which reads the ``ink`` map's levels; one holding the writing's ink is cut by ``_solid``, so a
    stroke it touches stays; ``carve``: once),
    and so are the pieces of a broken line (``_long_lines``); then the
    largest component and every component near it (gaps under half its size, chained: a digit's separate
    strokes, a string's digits) that is not a speck.
    ``string``: along the line of writing (components beside each other, overlapping or touching in height) the
    gap may be up to 1.5 times the size, as between the digits of a string written with room to spare (a narrow 1
    between wide digits leaves a gap as wide as a digit)."""
    labels, n = ndimage.label(core, structure=np.ones((3, 3), bool))
    if n == 0:
        return core, core
    boxes = ndimage.find_objects(labels)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    H, W = core.shape
    rules = []
    for k, (ys, xs) in enumerate(boxes):
        sides = (ys.start == 0) + (ys.stop == H) + (xs.start == 0) + (xs.stop == W)
        rules.append(_is_rule(labels[ys, xs] == k + 1, int(sides), (H, W)))
    blobs, inked, stroke = _blobs(labels, boxes, area, rules, ink)
    rules = np.asarray(rules)
    heaviest = area[~rules & ~blobs].max(initial=0)
    thumbs = blobs & (heaviest >= 0.01 * area)  # a thumb beside a small digit in a large photo goes too
    if (thumbs & inked).any() and carve:  # one with the writing's ink in it: cut its solid part away, once
        cut = _solid(labels, boxes, np.flatnonzero(thumbs & inked), stroke)
        cut |= np.isin(labels, np.flatnonzero(thumbs & ~inked) + 1)
        if (core & ~cut).any():  # else the thumbs go whole, below
            return _glyph(core & ~cut, string, ink, carve=False)
    drop = (rules & (heaviest >= 0.05 * area)) | thumbs  # a rule goes when a glyph of some weight is left
    drop[_long_lines(labels, boxes, area, np.flatnonzero(~drop))] = True
    alive = np.flatnonzero(~drop)
    big = int(alive[np.argmax(area[alive])])
    bb = np.array([[b[0].start, b[0].stop, b[1].start, b[1].stop] for b in boxes], np.float64)
    group = _chain(bb, area, drop, big, string, core.shape)
    marks: set[int] = set()
    while not string and (more := _marks(labels, sorted(group - marks), bb, min(H, W))):
        marks |= more  # a ring inside a ring: the digit circled twice
    dropped = np.isin(labels, np.asarray(sorted(marks)) + 1)
    if not string and (ring := _ring(labels, sorted(group - marks), bb)) is not None:
        glyph, inner = _glyph(core & ~ring & ~dropped, string, ink, carve)  # the digit circled tight, touching it
        return glyph, inner | ring | dropped
    return np.isin(labels, np.asarray(sorted(group - marks)) + 1), dropped


def _chain(
    bb: np.ndarray, area: np.ndarray, drop: np.ndarray, big: int, string: bool, shape: tuple[int, int]
) -> set[int]:
    """The components chained to the largest, ``big``, by gaps under half its size (1.5 sizes along a string's
    line), leaving out specks and what ``drop`` names: ``_glyph``'s grouping. ``bb``: each component's box as
    rows ``(y0, y1, x0, x1)``."""
    H, W = shape
    size = max(bb[big, 1] - bb[big, 0], bb[big, 3] - bb[big, 2])
    gap = 0.5 * size
    # a digit with margin all round is whole inside the crop: what reaches the edge beside it is from outside (a
    # neighbouring digit's part, a thumb), kept only where it all but touches the digit; above or below it, a
    # separate stroke of its own reaching the edge (a 5's bar in a crop tight at the top) joins as before
    edge = (bb[:, 0] == 0) | (bb[:, 1] == H) | (bb[:, 2] == 0) | (bb[:, 3] == W)
    outside = edge & (not string) & (not edge[big])
    group, frontier = {big}, [big]
    while frontier:
        k = frontier.pop()
        dy = np.maximum(0, np.maximum(bb[:, 0] - bb[k, 1], bb[k, 0] - bb[:, 1]))
        dx = np.maximum(0, np.maximum(bb[:, 2] - bb[k, 3], bb[k, 2] - bb[:, 3]))
        reach = np.where((dy == 0) & string, 3 * gap, gap)  # along a string's line: 1.5 sizes
        reach = np.where(outside, 0.1 * size, reach)
        near = np.flatnonzero((dy <= gap) & (dx <= reach) & ~drop)
        for j in near.tolist():
            if j not in group and area[j] >= 0.02 * area[big]:
                group.add(j)
                frontier.append(j)
    return group


def _blobs(
    labels: np.ndarray, boxes: list, area: np.ndarray, rules: list[bool], ink: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(blob, inked, stroke)``: the solid shapes reaching the image's edge that are not writing (a thumb or a
    finger holding the sheet, a dark corner), which of them hold the writing's ink (5% of their pixels at 85% of
    its median level: a stroke touching the thumb, or a thumb as dark as the pen), and the writing's stroke width
    (the largest other part's). Such a shape's
    widest inner disc is a quarter of its long side or more (a stroke's is its width: a tenth to a fifth of a
    digit's size) and 2.5 times the writing's stroke width or, beside writing with margin all round, fainter than
    it (its median ink under 70% of the writing's: skin against a pen; a bold digit's own part split off by a
    shadow is as dark as the rest). Where the writing runs off the edge too (a tight crop) it must be both: a bold
    digit cut by the crop, a marker-filled loop, is as dark as the rest and may be as wide. None is darker than
    the writing: that shape is the writing (a bold digit), the part taken for it a thumb's faint remnant."""
    H, W = labels.shape

    def at_edge(k: int) -> bool:
        ys, xs = boxes[k]
        return ys.start == 0 or xs.start == 0 or ys.stop == H or xs.stop == W

    def level(k: int) -> float:
        return float(np.median(ink[boxes[k]][labels[boxes[k]] == k + 1])) if ink is not None else 0.0

    blob = np.zeros(len(boxes), bool)
    disc = np.zeros(len(boxes))
    for k, (ys, xs) in enumerate(boxes):
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if at_edge(k) and min(h, w) >= 8 and not rules[k]:
            disc[k] = _disc(labels[ys, xs] == k + 1)
            blob[k] = disc[k] >= max(h, w) / 4
    rest = np.flatnonzero(~blob & ~np.asarray(rules, bool))
    if not blob.any() or len(rest) == 0 or ink is None:
        return np.zeros_like(blob), np.zeros_like(blob), 0.0
    j = int(rest[np.argmax(area[rest])])
    stroke, pen = _stroke_width(labels[boxes[j]] == j + 1), level(j)
    wide = disc >= 2.5 * stroke
    faint = np.array([blob[k] and level(k) < 0.7 * pen for k in range(len(boxes))])
    darker = np.array([blob[k] and level(k) > 1.1 * pen for k in range(len(boxes))])  # the writing: a bold digit
    blob &= ~darker & ((wide & faint) if at_edge(j) else (wide | faint))  # beside a thumb's faint remnant
    inked = np.array(
        [blob[k] and (ink[boxes[k]][labels[boxes[k]] == k + 1] >= 0.85 * pen).mean() >= 0.05 for k in range(len(boxes))]
    )
    return blob, inked, stroke


def _solid(labels: np.ndarray, boxes: list, ks: np.ndarray, stroke: float) -> np.ndarray:
    """The solid parts of components ``ks``: what an opening by a disc two writing strokes wide keeps of each (a
    thumb's body; a pen stroke touching it is left out, its corners too, where the widest disc inside a stroke is
    up to 0.7 of its width), grown by two pixels (its rim)."""
    out = np.zeros(labels.shape, bool)
    r = stroke + 1.0
    for k in ks.tolist():
        ys, xs = boxes[k]
        m = np.pad(labels[ys, xs] == k + 1, 1)
        core = ndimage.distance_transform_edt(m) > r
        if core.any():
            out[ys, xs] |= (ndimage.distance_transform_edt(~core) <= r + 2)[1:-1, 1:-1]
    return out


def _long_lines(labels: np.ndarray, boxes: list, area: np.ndarray, alive: np.ndarray) -> list[int]:
    """The straight parts of ``alive`` 2.5 times as long as the writing, drawn at most half as wide and holding at
    most half its pixels: what is left of a printed ruled or margin line that crossing lines cut into pieces, none
    of them across the whole image. The writing is the largest part that is not straight and holds half the
    largest part's pixels or more; no character is that much longer than the others (a 1 is as tall as a 7), and
    a pen's straight stroke is as wide and as heavy as its curved ones (a 1 beside a dot). With no curved part at
    all (a lone 1, a string of 1s) nothing goes."""
    long_side = np.array([max(ys.stop - ys.start, xs.stop - xs.start) for ys, xs in boxes])
    heavy = alive[area[alive] >= 0.5 * area[alive].max(initial=0)]  # writing, not a 1's flag or a speck
    for k in heavy[np.argsort(-area[heavy], kind="stable")][:8].tolist():
        mask = labels[boxes[k]] == k + 1
        if not _straight(mask):
            size, width, weight = long_side[k], _stroke_width(mask), area[k]
            break
    else:
        return []
    far = [k for k in alive.tolist() if long_side[k] >= 2.5 * size and area[k] <= 0.5 * weight]
    return [k for k in far if _straight(m := labels[boxes[k]] == k + 1) and _stroke_width(m) <= 0.5 * width]


def _marks(labels: np.ndarray, members: list[int], bb: np.ndarray, short_side: int) -> set[int]:
    """What a writer adds round a single digit and is not part of it: a ring round all the rest (the digit
    circled: the rest lies in the ring's hole, clear of it above and below, and spans 60% of its height or more,
    which a dash or a dot inside a 0 does not; the ring drawn thin against its hole) and a straight stroke under
    all the rest, flat, as wide as it or wider, with the rest's lowest point over its middle, or short of its ends
    where it reaches past the rest at both (the digit underlined; a slanted digit's lowest point lies left of
    its middle; a 2's foot drawn apart lies under the end of its diagonal, and a 1's separate base goes: the 1
    reads as a 1 without it). A single straight stroke in a ring stays with it: a 0 with a dash or a slash in it
    looks as a circled 1 does, and the 0 is the likelier. Only separate components: a mark touching the digit is
    one component with it."""
    drop: set[int] = set()
    for k in members:
        rest = [j for j in members if j != k]
        if not rest:
            break
        r = bb[rest]
        top, bottom, left, right = r[:, 0].min(), r[:, 1].max(), r[:, 2].min(), r[:, 3].max()
        y0, y1, x0, x1 = (int(v) for v in bb[k])
        mask = labels[y0:y1, x0:x1] == k + 1
        width, height = x1 - x0, y1 - y0
        below = y0 >= bottom - 0.05 * (bottom - top) and y0 + y1 >= 2 * bottom  # a line drawn at a slant
        if below and width >= right - left and height <= 0.35 * width and _line_like(mask, short_side):
            xs = np.flatnonzero(np.isin(labels[int(bottom) - 1, int(left) : int(right)], np.asarray(rest) + 1))
            mid = (left + xs.mean() - x0) / width  # where the rest's lowest point lies along the line
            past = min(left - x0, x1 - right) >= 0.08 * width  # the line reaches past the rest at both ends
            if 0.25 <= mid <= 0.75 or (past and 0.12 <= mid <= 0.88):  # not over one end of it (a 2's foot)
                drop.add(k)
            continue
        hole = ndimage.binary_fill_holes(mask) & ~mask
        if not hole.any() or top < y0 or bottom > y1 or left < x0 or right > x1:
            continue
        window = labels[y0:y1, x0:x1]
        inside = all(np.count_nonzero(hole & (window == j + 1)) == np.count_nonzero(window == j + 1) for j in rest)
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        hole_h, hole_w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        clear = min(top - y0 - rows[0], y0 + rows[-1] - bottom + 1) >= 0.05 * hole_h  # margin above and below
        thin = _stroke_width(mask) <= 0.2 * min(hole_h, hole_w)
        one_line = len(rest) == 1 and _straight(window == rest[0] + 1)  # a dash or a slash in a 0, or a circled 1
        if inside and clear and thin and not one_line and bottom - top >= 0.6 * hole_h:
            drop.add(k)
    return drop if len(drop) < len(members) else set()


def _ring(labels: np.ndarray, members: list[int], bb: np.ndarray) -> np.ndarray | None:
    """The ring of a digit circled tight enough to touch it (one component with it, which ``_marks`` cannot take
    apart), as a mask of the whole image, or ``None``. The ring is the largest member's band along the outside of
    its filled shape, as deep as the ring is thick (``_ring_depth``) and a pixel more; it is one when the rest
    (the member's other pixels and the other members) lies in the band's hole, spans 60% of the hole's height,
    touches the band along under a fifth of its own edge (a bold 0's thick side is all edge against its band; a
    digit drawn along the ring, an 8 filling it, leaves pieces that end on it all round), holds 30% of the band's
    ink or more (what is left of a digit whose strokes ran along the ring is less) and is not one straight stroke
    (a 0 with a slash reads as a 0, as in ``_marks``), and when the band is drawn thin against its hole (under a
    fifth of it). Only a round shape is ringed (``_round``): a digit drawn in outline is one ring-like line round
    its own inner outline."""
    k = max(members, key=lambda j: (bb[j, 1] - bb[j, 0]) * (bb[j, 3] - bb[j, 2]))
    y0, y1, x0, x1 = (int(v) for v in bb[k])
    window = labels[y0:y1, x0:x1]
    mask = window == k + 1
    filled = ndimage.binary_fill_holes(mask)
    if not _round(filled):
        return None
    outside = ndimage.distance_transform_edt(np.pad(filled, 1))[1:-1, 1:-1]
    band = mask & (outside <= _ring_depth(mask, outside) + 1.0)
    hole = ndimage.binary_fill_holes(band) & ~band
    rest = (mask & ~band) | np.isin(window, np.asarray([j + 1 for j in members if j != k], dtype=np.int64))
    if not hole.any() or np.count_nonzero(rest) < 0.05 * np.count_nonzero(mask):
        return None
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    span = np.flatnonzero(rest.any(1))
    edge = rest & ~ndimage.binary_erosion(rest)
    touch = edge & ndimage.binary_dilation(band, structure=np.ones((3, 3), bool))
    parts = ndimage.label(rest, structure=np.ones((3, 3), bool))[1]
    ring = (
        np.count_nonzero(rest & hole) >= 0.95 * np.count_nonzero(rest)
        and span[-1] - span[0] + 1 >= 0.6 * (rows[-1] - rows[0] + 1)
        and np.count_nonzero(touch) < 0.2 * np.count_nonzero(edge)
        and np.count_nonzero(rest) >= 0.3 * np.count_nonzero(band)
        and not (parts == 1 and _straight(rest))
        and _stroke_width(band) <= 0.2 * min(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    )
    if not ring:
        return None
    out = np.zeros(labels.shape, bool)
    out[y0:y1, x0:x1] = band
    return out


def _round(filled: np.ndarray) -> bool:
    """Whether a filled shape is round enough to be a ring drawn round something: 93% of its convex hull or more
    (hand-drawn rings and boxes, wobbly or open a little, fill 96-99%; a 6 drawn in outline, 88%)."""
    ys, xs = np.nonzero(filled & ~ndimage.binary_erosion(filled))
    try:
        hull = ConvexHull(np.stack([xs, ys], 1).astype(np.float64)).volume
    except QhullError:  # the edge on one line: no area
        return False
    return bool(np.count_nonzero(filled) >= 0.93 * hull)


def _ring_depth(mask: np.ndarray, outside: np.ndarray) -> float:
    """How thick a ring is: the depth from the filled shape's outside (``outside``, its distance map) down to which
    the layers one pixel deep are mostly ink; under it lies the hole, crossed only where the digit touches."""
    depth = 1.0
    while (layer := (outside > depth - 1) & (outside <= depth)).any() and mask[layer].mean() >= 0.5:
        depth += 1.0
    return depth - 1.0


def load_image(path: str | os.PathLike, *, string: bool = False) -> torch.Tensor:
    """A real image file -> float32 ``(H, W)`` ink map in ``[0, 1]`` (ink bright, background exactly 0).

    Read as a document reader reads a photo: at most ``WORK_SIDE`` pixels on the long side (a larger file's map is
    smaller than the file); a light sheet on a darker desk found and read alone (``_page``; the map is then the
    sheet's crop); the ground's level from the border's median (and its
    shading, when the light is uneven, from a smooth surface fitted to the ground and held within the border's
    levels, ``_ground_shading``); the sensor noise estimated and, where there
    is any, smoothed away before thresholding; strokes that a glare's hot spot fades given their contrast back
    (``_deglared``); the ink found by hysteresis (Otsu's threshold for the strokes'
    cores, a few noise levels for their soft edges); of its connected parts only the glyph kept (``_glyph``: no
    ruled lines, pen lines across the page, form boxes or specks). A clean scan keeps its ink values as they were
    (contrast stretched from the border's noise level to the ink's peak). ``string``: the file holds a string of
    characters (``hwr predict`` of a strings run): a rule it was written on is taken out however far the writing
    spans (``_lines_across``), and the characters along the line are kept with room between them (``_glyph``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not an image, is
    larger than ``MAX_PIXELS`` (a JPEG: ``MAX_JPEG_PIXELS``; checked from the header, before decoding), is
    truncated, or holds no ink."""
    path = Path(path)
    return _ink_map(_open(path), path, string)


def load_image_bytes(data: bytes, name: str = "upload", *, string: bool = False) -> torch.Tensor:
    """``load_image`` of an image file's bytes held in memory (an upload): the same ink map, and the same errors
    (``ValueError``) with ``name`` in place of the path."""
    return _ink_map(_open_checked(io.BytesIO(data), name), name, string)


def _undecodable(path: object, e: Exception) -> InputError:
    what = str(e) if isinstance(e, (OSError, SyntaxError, ValueError)) else f"{type(e).__name__}: {e}"
    return InputError(f"{path}: cannot decode the image ({what}); the file is damaged or cut short: save it again")


def _decoded(img: Image.Image, path: object) -> tuple[np.ndarray, int]:
    """``(_grey of the image, its page count)``, the image closed; truncated or malformed pixel data is an
    ``InputError`` naming ``path``, whatever PIL's plugin raised (a multi-page TIFF or GIF cut short raises
    ``TypeError`` or ``IndexError`` when its pages are counted)."""
    try:
        with img:
            return _grey(img), getattr(img, "n_frames", 1)
    except MemoryError:
        raise
    except Exception as e:
        raise _undecodable(path, e) from None


def _no_ink(path: object, contrast: float, pages: int) -> InputError:
    """The error of an image without ink; of a multi-page file, which page was read and how to read another."""
    note = (
        f" (the first of its {pages} pages was read: save the page you mean as a file of its own)" if pages > 1 else ""
    )
    return InputError(
        f"{path}: no ink found: the image is blank or all background (contrast {contrast:.3f} < {MIN_CONTRAST}); "
        f"write the digit darker or crop closer{note}"
    )


def _enlarged(grey: np.ndarray) -> np.ndarray:
    """A thumbnail (short side under ``MIN_SIDE``: an 8x8 scan like scikit-learn's digits, a 12-pixel crop) scaled
    up bilinearly by the smallest whole factor that brings its short side to ``MIN_SIDE`` (the long side kept
    within ``WORK_SIDE``). Read at its own size, its strokes one or two pixels wide pass for sensor noise and are
    smoothed away (an 8x8 seven read as blank; a 10-pixel one as a 1). Larger images are returned as they are."""
    short = min(grey.shape)
    k = min(math.ceil(MIN_SIDE / max(short, 1)), WORK_SIDE // max(grey.shape))
    if short >= MIN_SIDE or k <= 1:
        return grey
    return ndimage.zoom(grey, k, order=1, mode="nearest", grid_mode=True).astype(np.float32)


def _ink_map(img: Image.Image, path: object, string: bool = False) -> torch.Tensor:
    """``load_image``'s work on an opened image (closed when done; of a multi-page file, its first page); messages
    start with ``path``."""
    grey, pages = _decoded(img, path)
    if max(grey.shape) < SMALLEST:  # a thin strip is still read (its ink, however thin, is there)
        h, w = grey.shape
        raise InputError(f"{path}: {w}x{h} pixels is too small to hold a digit; give at least {SMALLEST} pixels across")
    grey = _enlarged(grey)
    page = _page(grey)
    if page is not None:  # a sheet photographed on a darker desk: read the sheet alone
        grey = page
    h, w = grey.shape
    noise = _noise_sigma(grey)
    smooth = noise > NOISE_LEVEL
    if smooth:  # denoise before thresholding: the blur widens with the noise and the picture
        sigma = min(3.0, max(1.0, noise * 255.0 / 8.0, min(h, w) / 300.0))
        grey = ndimage.gaussian_filter(grey, sigma, mode="nearest")
    b = max(1, round(0.02 * min(h, w)))  # border band: 2% of the short side
    border = _band(grey, b)
    dark_ink, bg = _ink_side(grey, border)
    d = 1.0 - grey if dark_ink else grey  # ink bright
    shade = _ground_shading(d, b)
    ground = (1.0 - bg if dark_ink else bg) if shade is None else shade
    stepped = _stepped(d, ground)
    if stepped is None:
        ink = np.clip(d - ground, 0.0, None)
    else:  # the shadow dims the ink as much as the paper: its contrast read against the paper's light there
        ink = np.clip(d - stepped, 0.0, None)
        if dark_ink:
            ink = ink / np.maximum(1.0 - stepped, 0.1)
    if dark_ink:
        deglared = _deglared(d, ink)
        ink = ink if deglared is None else deglared
    border_ink = _band(ink, b)
    peak = float(ink.max())
    floor = max(float(np.quantile(_band_ground(border_ink, peak), 0.9)), 3.0 * noise / 4.0 if smooth else 0.0)
    high = max(_otsu(ink, peak) if peak > 0 else 0.0, floor + MIN_CONTRAST / 2)
    core = ink > high
    if peak - floor < MIN_CONTRAST or not core.any():
        raise _no_ink(path, peak - floor, pages)
    lines = _lines_across(core, string)
    if lines.any() and (core & ~lines).any():  # a rule through the digit: take the rule away, keep the crossings
        core &= ~lines
        ink = np.where(ndimage.binary_dilation(lines, iterations=2) & ~ndimage.binary_dilation(core), 0.0, ink)
    glyph, marks = _glyph(core, string, ink)
    labels, _ = ndimage.label(ink > floor, structure=np.ones((3, 3), bool))
    kept = np.isin(labels, np.unique(labels[glyph]))
    # soft edges only near the strokes, never a web of noise, a shading residue or a line's halo: within half a
    # stroke width, or a whole one on a clean file (no noise, one ground level), whose faint stroke ends are its own
    stroke = _stroke_width(glyph)
    reach = stroke / 2 if smooth or shade is not None else stroke
    kept &= ndimage.binary_dilation(glyph, iterations=max(1, round(reach)))
    if marks.any():  # a ring or a line dropped beside the digit takes its soft edges with it
        kept &= glyph | ~ndimage.binary_dilation(marks, iterations=max(1, round(reach)))
    peak = float(ink[kept].max())
    out = np.where(kept, np.clip((ink - floor) / (peak - floor), 0.0, 1.0), 0.0).astype(np.float32)
    return torch.from_numpy(out)
