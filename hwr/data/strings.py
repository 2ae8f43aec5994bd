"""Synthetic handwritten digit strings composed from real MNIST digits, pure and keyed.

``render(key, pool, n, spec)`` draws ``n`` strings of ``spec.min_length .. spec.max_length`` digits from a
``DigitPool`` and returns uint8 images ``(n, 1, height, width)`` (ink bright, background 0, left-aligned, the
rest of the fixed width padding) with padded targets, lengths and content widths. Every digit gets its own
scale, rotation, slant jitter, baseline offset and stroke width (erode .. dilate); every string its own slant,
spacing (from overlapping through touching to wide), horizontal stretch and margins. Each digit is resampled
once, straight into the canvas, by ``affine_grid``/``grid_sample`` with its whole transform (digit pose, place in
the string, the string's height normalisation) composed into one affine map; the digits are then composed by a
pixel-wise max. No per-sample Python, no global RNG: the same key gives the same strings on any device.

Height normalisation is the one ``hwr predict`` applies to real images: the string's ink box is scaled to
``spec.ink_height`` pixels and centred vertically in ``spec.height``; the width follows with the string's own
aspect (compressed only when a long, wide string would not fit).

Splits: ``pools(dataset)`` holds the MNIST training digits of the fixed 90/10 split ``hwr.tasks.digits.training`` uses
(``train``), its held-out 10% (``val``) and the MNIST test digits (``test``), so no digit image crosses
splits; ``fixed_set(pool, n, spec)`` is the seeded test set (lengths balanced) used for figures and test figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from hwr import random
from hwr.data import splits
from hwr.random import Key

__all__ = [
    "BLEED",
    "INK",
    "PAD",
    "TEST_SEED",
    "DigitPool",
    "StringSpec",
    "Strings",
    "digit_pool",
    "fixed_set",
    "pools",
    "render",
    "width_mask",
]

PAD = -1  # target padding (as hwr.decode.PAD)
TEST_SEED = 1_302_013  # the fixed seeded test strings
_SRC = 28  # MNIST side
INK = 0.2  # fraction of full scale above which a pixel counts as ink (ink boxes here, crops in hwr predict)
BLEED = 1.0  # rendered ink boxes measure ink_height + BLEED (resampling, dilated strokes): 24.98 for 24, measured


@dataclass(frozen=True)
class StringSpec:
    """How strings look. Lengths and pixels: ``height`` x ``width`` canvas, ``ink_height`` the height the string's
    ink box is scaled to. Per digit: ``scale`` (size factor uniform in ``[1 - scale, 1 + scale]``),
    ``rotation`` (degrees, +-), ``slant_jitter`` (degrees, +- around the string's slant), ``baseline`` (vertical
    offset, MNIST pixels, +-), ``stroke`` (stroke-width change in ``[-stroke, stroke]``: -1 a full 3x3 erosion,
    +1 a full dilation). Per string: ``slant`` (degrees, +-), ``gap`` (spacing between ink boxes, MNIST pixels,
    uniform in the range; negative overlaps), ``gap_jitter`` (+- per gap), ``stretch`` (horizontal factor in
    ``[1 - stretch, 1 + stretch]``), ``margin`` (canvas pixels of background left and right, uniform)."""

    height: int = 32
    width: int = 160
    min_length: int = 1
    max_length: int = 8
    ink_height: float = 24.0
    scale: float = 0.18
    rotation: float = 8.0
    slant: float = 15.0
    slant_jitter: float = 5.0
    baseline: float = 2.0
    stroke: float = 0.5
    gap: tuple[float, float] = (-2.0, 6.0)
    gap_jitter: float = 1.5
    stretch: float = 0.15
    margin: tuple[float, float] = (1.0, 5.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gap", tuple(float(v) for v in self.gap))
        object.__setattr__(self, "margin", tuple(float(v) for v in self.margin))
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.height < 8 or self.width < self.height:
            raise ValueError(f"canvas {self.height}x{self.width} is too small; need height >= 8, width >= height")
        if not 0 < self.ink_height <= self.height:
            raise ValueError(f"ink_height must be in (0, height={self.height}], got {self.ink_height}")
        if not (0 <= self.scale < 1 and 0 <= self.stretch < 1 and 0 <= self.stroke <= 1):
            raise ValueError(
                f"scale and stretch must be in [0, 1), stroke in [0, 1]; got {self.scale}, "
                f"{self.stretch}, {self.stroke}"
            )
        if self.gap[0] > self.gap[1] or self.margin[0] > self.margin[1] or self.margin[0] < 0:
            raise ValueError(f"gap and margin must be (low, high) ranges, margins >= 0; got {self.gap}, {self.margin}")
        if 2 * self.margin[1] + 4 * self.max_length > self.width:
            raise ValueError(f"width {self.width} cannot hold {self.max_length} digits with margins {self.margin}")


class DigitPool(NamedTuple):
    """Digits to compose strings from: uint8 ``images`` ``(N, 1, 28, 28)``, int64 ``labels`` ``(N,)``, ``index``
    ``(N,)`` each digit's position in its source split, and ``spans`` ``(N, 28, 2)`` float: per image row, the
    first and last ink column (offsets from the image centre; NaN for a row without ink)."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    spans: torch.Tensor


class Strings(NamedTuple):
    """Rendered strings: uint8 ``images`` ``(N, 1, H, W)``, int64 ``targets`` ``(N, max_length)`` padded with
    ``PAD``, ``lengths`` ``(N,)``, ``widths`` ``(N,)`` content width in pixels (the rest is padding: see
    ``width_mask``), and ``digits`` ``(N, max_length)`` the pool rows used (``PAD`` past the length)."""

    images: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor
    widths: torch.Tensor
    digits: torch.Tensor


def digit_pool(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> DigitPool:
    """A pool of uint8 ``(N, 1, 28, 28)`` digits and their labels; ``index`` defaults to ``0 .. N-1``."""
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (1, _SRC, _SRC):
        raise ValueError(f"digit_pool takes uint8 (N, 1, 28, 28) images, got {images.dtype} {tuple(images.shape)}")
    if len(labels) == 0 or labels.shape != (images.shape[0],):
        raise ValueError(f"digit_pool needs one label per image and at least one image, got {tuple(labels.shape)}")
    index = torch.arange(len(labels), device=labels.device) if index is None else index
    ink = images[:, 0] > int(INK * 255)  # (N, 28, 28)
    ink = ink | ~ink.flatten(1).any(1)[:, None, None]  # a blank digit spans its whole field
    cols = torch.arange(_SRC, device=images.device, dtype=torch.float32) - (_SRC - 1) / 2.0
    nan = torch.tensor(float("nan"), device=images.device)
    first = torch.where(ink, cols, torch.inf).amin(-1)  # (N, 28)
    last = torch.where(ink, cols, -torch.inf).amax(-1)
    spans = torch.where(ink.any(-1)[..., None], torch.stack([first, last], -1), nan)
    return DigitPool(images, labels, index, spans)


def pools(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    val_fraction: float = 0.1,
) -> dict[str, DigitPool]:
    """``train`` / ``val`` pools from the fixed stratified split of the training digits (``SPLIT_SEED``, as
    ``hwr.tasks.digits.training``) and a ``test`` pool of the test digits; ``index`` refers to each source split."""
    tr, va = splits.stratified_split(random.key(splits.SPLIT_SEED), train_labels, val_fraction)
    tr, va = tr.to(train_labels.device), va.to(train_labels.device)
    return {
        "train": digit_pool(train_images[tr], train_labels[tr], tr),
        "val": digit_pool(train_images[va], train_labels[va], va),
        "test": digit_pool(test_images, test_labels),
    }


def width_mask(widths: torch.Tensor, width: int) -> torch.Tensor:
    """``(N, width)`` bool: True on the columns that hold the string, False on the right padding."""
    return torch.arange(width, device=widths.device)[None, :] < widths[:, None]


def _mat(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Batched 2x2 matrices ``[[a, b], [c, d]]`` from same-shape tensors -> ``(..., 2, 2)``."""
    return torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], -2)


def _max3(x: torch.Tensor) -> torch.Tensor:
    """3x3 max filter of ``(K, 1, H, W)`` (zero padded), as two 3-tap maxima: cheaper than ``max_pool2d``."""
    p = F.pad(x, (1, 1, 1, 1))
    r = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])  # (K, 1, H+2, W)
    return torch.maximum(torch.maximum(r[..., :-2, :], r[..., 1:-1, :]), r[..., 2:, :])


def _stroke(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Stroke width of float digits ``(K, 1, 28, 28)``: blend towards a 3x3 dilation (``w > 0``) or erosion."""
    w = w[:, None, None, None]
    return x + w.clamp_min(0) * (_max3(x) - x) + (-w).clamp_min(0) * (1.0 - _max3(1.0 - x) - x)


def _window_grid(theta: torch.Tensor, x0: torch.Tensor, h: int, w: int, wd: int) -> torch.Tensor:
    """The rows of ``F.affine_grid(theta, (K, 1, h, w), align_corners=False)`` restricted to the columns
    ``x0 .. x0 + wd - 1`` of each sample: ``(K, h, wd, 2)``, by broadcasting (no batched matmul)."""
    cols = x0[:, None].to(theta.dtype) + torch.arange(wd, device=theta.device, dtype=theta.dtype)  # (K, wd)
    xs = (2.0 * cols + 1.0) / w - 1.0  # normalised pixel centres
    ys = (2.0 * torch.arange(h, device=theta.device, dtype=theta.dtype) + 1.0) / h - 1.0  # (h,)
    out = []
    for r in range(2):
        col = theta[:, r, 0, None] * xs  # (K, wd)
        row = theta[:, r, 1, None] * ys + theta[:, r, 2, None]  # (K, h)
        out.append(col[:, None, :] + row[:, :, None])
    return torch.stack(out, dim=-1)


def _extents(spans: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ink extents of posed digits: ``spans`` ``(..., 28, 2)`` (a pool's per-row ink columns), ``pose``
    ``(..., 2, 2)`` -> ``lo``, ``hi`` ``(..., 2)`` (x, y) in source pixels from the image centre: the exact range
    of the ink pixel centres after posing (a linear map takes its extremes over a row at the row's first or last
    ink pixel), widened by half a posed pixel either side."""
    rows = torch.arange(_SRC, device=spans.device, dtype=torch.float32) - (_SRC - 1) / 2.0
    px = spans.flatten(-2)  # (..., 56): first, last of row 0, then of row 1, ...
    py = rows.repeat_interleave(2)  # (56,)
    ink = ~torch.isnan(px)
    px = torch.nan_to_num(px)
    lo, hi = [], []
    for r in range(2):
        pos = pose[..., r, 0, None] * px + pose[..., r, 1, None] * py  # (..., 56)
        half = 0.5 * (pose[..., r, 0].abs() + pose[..., r, 1].abs())
        lo.append(torch.where(ink, pos, torch.inf).amin(-1) - half)
        hi.append(torch.where(ink, pos, -torch.inf).amax(-1) + half)
    return torch.stack(lo, -1), torch.stack(hi, -1)


def _layout(
    spans: torch.Tensor, valid: torch.Tensor, u: torch.Tensor, v: torch.Tensor, spec: StringSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each digit of ``c`` strings goes: ``spans`` ``(c, S, 28, 2)`` the digits' ink rows, ``valid`` ``(c, S)`` slots in
    use, ``u`` ``(c, S, 6)`` in [-1, 1), ``v`` ``(c, 5)`` in [0, 1). Returns ``theta`` ``(c, S, 2, 3)`` (canvas ->
    source, grid_sample's normalised coordinates), ``field`` ``(c, S, 2)`` the canvas columns (first, last) that
    each digit's source field covers, and the strings' content widths ``(c,)``."""
    device = spans.device
    s, h, w = spec.max_length, spec.height, spec.width
    # each digit's pose A = R(rot) Sh(slant) size, about its image centre (source pixels, x right, y down)
    size = 1.0 + spec.scale * u[..., 0]
    rot = math.radians(spec.rotation) * u[..., 1]
    slant = math.radians(spec.slant) * (2.0 * v[:, :1] - 1.0) + math.radians(spec.slant_jitter) * u[..., 2]
    cos, sin, tan = torch.cos(rot), torch.sin(rot), torch.tan(slant)
    pose = _mat(cos, cos * -tan - sin, sin, cos - sin * tan) * size[..., None, None]  # R @ [[1, -tan], [0, 1]]
    lo, hi = _extents(spans, pose)  # (c, S, 2)

    # the string: ink boxes left to right with gaps between them; the baseline jitters
    gap_base = spec.gap[0] + (spec.gap[1] - spec.gap[0]) * v[:, 1:2]
    gaps = torch.where(torch.arange(s, device=device) > 0, gap_base + spec.gap_jitter * u[..., 3], 0.0)
    widths = hi[..., 0] - lo[..., 0]
    left = widths.cumsum(1) - widths + gaps.cumsum(1)  # (c, S) layout x of each ink box's left edge
    off_x = left - lo[..., 0]
    off_y = spec.baseline * u[..., 4] - (lo[..., 1] + hi[..., 1]) / 2
    big = torch.tensor(1e9, device=device)
    right_end = torch.where(valid, left + widths, -big).amax(1)  # (c,)
    y_top = torch.where(valid, off_y + lo[..., 1], big).amin(1)
    y_bot = torch.where(valid, off_y + hi[..., 1], -big).amax(1)

    # height normalisation: the ink box -> ink_height, centred; x follows with the string's stretch
    fy = spec.ink_height / (y_bot - y_top).clamp_min(1.0)  # (c,)
    m_left = spec.margin[0] + (spec.margin[1] - spec.margin[0]) * v[:, 2]
    m_right = spec.margin[0] + (spec.margin[1] - spec.margin[0]) * v[:, 3]
    fx = fy * (1.0 + spec.stretch * (2.0 * v[:, 4] - 1.0))
    fx = torch.minimum(fx, (w - m_left - m_right) / right_end.clamp_min(1.0))  # compress what would not fit
    y0 = (h - spec.ink_height) / 2.0 - fy * y_top
    content = (m_left + fx * right_end + m_right).ceil().clamp(1, w).long()

    # canvas = G (A p + o) + g0 for source offsets p, inverted and put in grid_sample's normalised coordinates
    zeros = torch.zeros_like(fx)
    g = _mat(fx, zeros, zeros, fy)[:, None]  # (c, 1, 2, 2)
    fwd = g @ pose  # (c, S, 2, 2): source pixel offsets from the centre -> canvas pixels
    shift = (g @ torch.stack([off_x, off_y], -1)[..., None])[..., 0] + torch.stack([m_left, y0], -1)[:, None]
    a, b, cc, d = fwd[..., 0, 0], fwd[..., 0, 1], fwd[..., 1, 0], fwd[..., 1, 1]
    inv = _mat(d, -b, -cc, a) / (a * d - b * cc)[..., None, None]  # canvas -> source offsets
    d_out = torch.tensor([w / 2.0, h / 2.0], device=device)
    e_out = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=device)
    theta_a = inv * d_out * (2.0 / _SRC)  # columns scaled by the output half-sizes
    theta_b = (inv @ (e_out - shift)[..., None])[..., 0] * (2.0 / _SRC)  # the source centre is normalised 0
    theta = torch.cat([theta_a, theta_b[..., None]], -1)  # (c, S, 2, 3)
    # the canvas columns the whole posed 28x28 field covers (outside it grid_sample reads zeros)
    half = (_SRC / 2.0) * (fwd[..., 0, 0].abs() + fwd[..., 0, 1].abs())  # (c, S)
    field = shift[..., 0, None] + torch.stack([-half, half], -1)
    return theta, field, content


def render(
    key: Key, pool: DigitPool, n: int, spec: StringSpec = StringSpec(), *, balanced: bool = False, chunk: int = 256
) -> Strings:
    """``n`` strings from ``pool`` (on the pool's device), all randomness from ``key``. Lengths are uniform in
    ``min_length .. max_length``, or cycle through them when ``balanced`` (equal counts, for evaluation sets).
    ``chunk`` bounds memory only: the strings do not depend on it."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    device = pool.images.device
    key = key.to(device)
    s, h, w = spec.max_length, spec.height, spec.width
    k_len, k_idx, k_dig, k_str = random.split(key, 4)
    if balanced:
        lengths = spec.min_length + torch.arange(n, device=device) % (s - spec.min_length + 1)
    else:
        lengths = random.randint(k_len, (n,), spec.min_length, s + 1)
    rows = random.randint(k_idx, (n, s), 0, len(pool.labels))  # (n, S) pool rows
    valid = torch.arange(s, device=device)[None, :] < lengths[:, None]  # (n, S)
    u = random.uniform(k_dig, (n, s, 6)) * 2.0 - 1.0  # per digit, in [-1, 1)
    v = random.uniform(k_str, (n, 5))  # per string, in [0, 1)
    stroke = spec.stroke * u[..., 5]

    images = torch.zeros(n, 1, h, w, dtype=torch.uint8, device=device)
    widths = torch.zeros(n, dtype=torch.int64, device=device)
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        theta, field, widths[i:j] = _layout(pool.spans[rows[i:j]], valid[i:j], u[i:j], v[i:j], spec)
        # each digit is resampled only inside a window of columns around its ink, then max-composed into place
        sel = valid[i:j].flatten().nonzero().squeeze(1)  # rendered slots only
        owner = sel // s  # string of each rendered digit, within the chunk
        span = field.flatten(0, 1)[sel]  # (K, 2) canvas columns each digit can touch
        x0 = (span[:, 0].floor().long() - 1).clamp(0, w)  # (K,) window start columns
        wd = math.ceil(float((span[:, 1] - x0).amax())) + 2 if len(sel) else 1  # one window width for all
        wp = w + wd  # a padded canvas row: windows never wrap into the next row
        x = pool.images[rows[i:j].flatten()[sel]].float() / 255.0  # (K, 1, 28, 28)
        x = _stroke(x, stroke[i:j].flatten()[sel])
        grid = _window_grid(theta.flatten(0, 1)[sel], x0, h, w, wd)  # (K, H, wd, 2)
        ink = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (K, 1, H, wd)
        r = torch.arange(h, device=device)[:, None] * wp + torch.arange(wd, device=device)  # (H, wd)
        where = (owner * (h * wp) + x0)[:, None, None] + r  # (K, H, wd) flat canvas positions
        canvas = torch.zeros((j - i) * h * wp, device=device)  # composition: the brightest ink wins
        canvas = canvas.scatter_reduce(0, where.flatten(), ink.flatten(), "amax").view(j - i, 1, h, wp)[..., :w]
        images[i:j] = (canvas.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    targets = torch.where(valid, pool.labels[rows], PAD)
    return Strings(images, targets, lengths, widths, torch.where(valid, rows, PAD))


def fixed_set(pool: DigitPool, n: int, spec: StringSpec = StringSpec(), *, seed: int = TEST_SEED) -> Strings:
    """The seeded evaluation strings of ``pool``: ``n`` strings, lengths balanced, the same on every call."""
    return render(random.key(seed), pool, n, spec, balanced=True)
