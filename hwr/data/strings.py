"""Synthetic handwritten digit strings composed from real MNIST digits, pure and keyed.

``render(key, pool, n, spec)`` draws ``n`` strings of ``spec.min_length .. spec.max_length`` digits from a
``DigitPool`` and returns uint8 images ``(n, 1, height, width)`` (ink bright, background 0, left-aligned, the
rest of the fixed width padding) with padded targets, lengths and content widths. Every digit gets its own
scale, rotation, slant jitter, baseline offset and stroke width (erode .. dilate); every string its own slant,
spacing (from overlapping through touching to wide), horizontal stretch and margins. Each digit is resampled
once, straight into the canvas, by ``affine_grid``/``grid_sample`` with its whole transform (digit pose, place in
the string, the string's height normalisation) composed into one affine map; the digits are then composed by a
pixel-wise max. No per-sample Python, no global RNG: the same key gives the same strings on any device.

Separators (``spec.separators``, a subset of ``SEPARATORS`` = ``-.,``): with ``spec.separator_rate`` > 0 an inner
slot of a string (never the first or the last, never next to another separator) holds a separator instead of a
digit with that probability, so strings come in digit groups (``12345-6789``, ``1,234.56``, ``03.12``) and a
reading format's ``-`` is something the model has seen. The glyphs are drawn procedurally (``separator_glyphs``:
round-capped strokes of MNIST's stroke width in a 28x28 field, a hyphen at mid-height, a point on the digits'
baseline, a comma on the baseline with a tail below it, each with its own keyed size, angle and place) and then
pass through the digits' own pose, stroke-width and spacing jitter. Classes: ``0..9`` the digits, then the
separators in the order ``spec.separators`` lists them (``spec.alphabet``); a spec without separators renders
exactly as before.

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
from hwr.errors import InputError
from hwr.random import Key

__all__ = [
    "BLEED",
    "DIGITS",
    "INK",
    "PAD",
    "SEPARATORS",
    "TEST_SEED",
    "DigitPool",
    "StringSpec",
    "Strings",
    "digit_pool",
    "fixed_set",
    "pools",
    "render",
    "separator_glyphs",
    "width_mask",
]

PAD = -1  # target padding (as hwr.decode.PAD)
TEST_SEED = 1_302_013  # the fixed seeded test strings
_SRC = 28  # MNIST side
INK = 0.2  # fraction of full scale above which a pixel counts as ink (ink boxes here, crops in hwr predict)
BLEED = 1.0  # rendered ink boxes measure ink_height + BLEED (resampling, dilated strokes): 24.98 for 24, measured
DIGITS = "0123456789"  # classes 0..9
SEPARATORS = "-.,"  # the separators strings may hold (StringSpec.separators picks from these)
_SEP_STREAM = 0x5E9  # fold_in of a render key: the separators' draws (a stream the digit-only strings never read)


@dataclass(frozen=True)
class StringSpec:
    """How strings look. Lengths and pixels: ``height`` x ``width`` canvas, ``ink_height`` the height the string's
    ink box is scaled to. Per digit: ``scale`` (size factor uniform in ``[1 - scale, 1 + scale]``),
    ``rotation`` (degrees, +-), ``slant_jitter`` (degrees, +- around the string's slant), ``baseline`` (vertical
    offset, MNIST pixels, +-), ``stroke`` (stroke-width change in ``[-stroke, stroke]``: -1 a full 3x3 erosion,
    +1 a full dilation). Per string: ``slant`` (degrees, +-), ``gap`` (spacing between ink boxes, MNIST pixels,
    uniform in the range; negative overlaps), ``gap_jitter`` (+- per gap), ``stretch`` (horizontal factor in
    ``[1 - stretch, 1 + stretch]``), ``margin`` (canvas pixels of background left and right, uniform).
    ``separators``: the separator characters strings may hold (from ``SEPARATORS``; classes 10, 11, ... in this
    order), each inner slot one with probability ``separator_rate``; separators with rate 0 are classes that the
    strings never show (an evaluation set of digits for a model that reads separators). ``formats``: templates
    that every string follows instead, one picked per string (cycled when ``balanced``): ``d`` a digit, a
    separator itself (``ddddd-dddd`` postcodes, ``d,ddd.dd`` amounts); for evaluation sets of one format."""

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
    separators: str = ""
    separator_rate: float = 0.0
    formats: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "gap", tuple(float(v) for v in self.gap))
        object.__setattr__(self, "margin", tuple(float(v) for v in self.margin))
        object.__setattr__(self, "formats", tuple(self.formats))
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
        if any(c not in SEPARATORS for c in self.separators) or len(set(self.separators)) != len(self.separators):
            raise InputError(f"separators must be distinct characters of {SEPARATORS!r}, got {self.separators!r}")
        if not 0.0 <= self.separator_rate <= 0.5 or (self.separator_rate > 0 and not self.separators):
            raise InputError(
                f"separator_rate must be in [0, 0.5] and needs separators (e.g. separators='-.,'), got "
                f"{self.separator_rate} with separators {self.separators!r}"
            )
        for t in self.formats:
            if not 1 <= len(t) <= self.max_length or any(c != "d" and c not in self.separators for c in t):
                raise InputError(
                    f"format {t!r}: a template of 1 to max_length={self.max_length} characters, each 'd' (a digit) "
                    f"or one of the spec's separators {self.separators!r}; e.g. 'ddddd-dddd' with separators='-'"
                )

    @property
    def alphabet(self) -> str:
        """The characters of the classes, in class order: the digits, then the separators."""
        return DIGITS + self.separators


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
    ``width_mask``), and ``digits`` ``(N, max_length)`` the pool rows used (``PAD`` past the length and on
    separators). Targets are class indices: ``0..9`` digits, ``10..`` the spec's separators."""

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
    return DigitPool(images, labels, index, _spans(images))


def _spans(images: torch.Tensor) -> torch.Tensor:
    """Per image row of uint8 ``(N, 1, 28, 28)``, the first and last ink column from the centre ``(N, 28, 2)``
    (NaN for a row without ink; a blank image spans its whole field)."""
    ink = images[:, 0] > int(INK * 255)  # (N, 28, 28)
    ink = ink | ~ink.flatten(1).any(1)[:, None, None]
    cols = torch.arange(_SRC, device=images.device, dtype=torch.float32) - (_SRC - 1) / 2.0
    nan = torch.tensor(float("nan"), device=images.device)
    first = torch.where(ink, cols, torch.inf).amin(-1)  # (N, 28)
    last = torch.where(ink, cols, -torch.inf).amax(-1)
    return torch.where(ink.any(-1)[..., None], torch.stack([first, last], -1), nan)


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


def _capsule(p0: torch.Tensor, p1: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Ink of round-capped strokes from ``p0`` to ``p1`` ``(K, 2)`` (x, y from the field centre, y down) of
    radius ``r`` ``(K,)`` on the 28x28 field: ``(K, 28, 28)`` in ``[0, 1]``, a one-pixel antialiased edge."""
    c = torch.arange(_SRC, device=p0.device, dtype=torch.float32) - (_SRC - 1) / 2.0
    pix = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1)  # (28, 28, 2): x, y of each pixel centre
    d = (p1 - p0)[:, None, None, :]
    rel = pix - p0[:, None, None, :]
    t = ((rel * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-6)).clamp(0.0, 1.0)  # nearest point on the segment
    dist = (rel - t[..., None] * d).norm(dim=-1)
    return (r[:, None, None] + 0.5 - dist).clamp(0.0, 1.0)


def _glyphs(which: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Separator glyphs: ``which`` ``(K,)`` indices into ``SEPARATORS``, ``u`` ``(K, 6)`` uniforms in [0, 1) ->
    uint8 ``(K, 1, 28, 28)``. MNIST digits fill rows -10..10 about the field centre, so the digits' baseline is
    at y = +10: a hyphen 7-12 px long at mid-height (y in [-1.5, 1.5], +-8 degrees); a point (a dot 1.4-2.2 px
    in radius, a short dab) sitting on the baseline; a comma's dot on the baseline and a thinner tail 3-4.5 px
    down and to the left. Strokes are 2-3 px wide, as MNIST's."""
    ang = math.radians(8.0) * (2.0 * u[:, 1] - 1.0)
    half = 3.5 + 2.5 * u[:, 0]
    x = 2.0 * u[:, 3] - 1.0
    hyphen_at = torch.stack([x, 3.0 * u[:, 2] - 1.5], -1)
    along = torch.stack([torch.cos(ang), torch.sin(ang)], -1) * half[:, None]
    dab = torch.stack([torch.cos(6.3 * u[:, 1]), torch.sin(6.3 * u[:, 1])], -1) * (0.6 * u[:, 0])[:, None]
    point_at = torch.stack([x, 7.8 + 1.0 * u[:, 2]], -1)
    dot_at = torch.stack([x, 7.2 + 1.2 * u[:, 2]], -1)
    tail = torch.stack([-1.0 - 1.5 * u[:, 0], 3.0 + 1.5 * u[:, 1]], -1)
    r = 1.0 + 0.5 * u[:, 4]
    kind = which[:, None]
    p0 = torch.where(kind == 0, hyphen_at - along, torch.where(kind == 1, point_at - dab, dot_at))
    p1 = torch.where(kind == 0, hyphen_at + along, torch.where(kind == 1, point_at + dab, dot_at))
    r_dot = torch.where(which == 0, r, 1.4 + 0.8 * u[:, 5])
    ink = _capsule(p0, p1, r_dot)
    tail_ink = _capsule(dot_at, dot_at + tail, 0.8 + 0.4 * u[:, 5])
    ink = torch.where((which == 2)[:, None, None], torch.maximum(ink, tail_ink), ink)
    return (ink * 255.0).round().to(torch.uint8)[:, None]


def separator_glyphs(key: Key, chars: str) -> torch.Tensor:
    """One procedurally drawn glyph per character of ``chars`` (each of ``SEPARATORS``), all randomness from
    ``key``: uint8 ``(len(chars), 1, 28, 28)`` on ``key``'s device, drawn as ``render`` draws them."""
    if any(c not in SEPARATORS for c in chars):
        raise InputError(f"separator_glyphs draws {SEPARATORS!r}, got {chars!r}")
    which = torch.tensor([SEPARATORS.index(c) for c in chars], dtype=torch.int64, device=key.device)
    return _glyphs(which, random.uniform(key, (len(chars), 6)))


class _Separators(NamedTuple):
    """Where a batch of strings holds separators: ``mask`` ``(n, S)``, ``cls`` ``(n, S)`` the class (10, 11, ...),
    ``glyph`` ``(n, S)`` the index into ``SEPARATORS``, ``u`` ``(n, S, 6)`` the glyphs' uniforms."""

    mask: torch.Tensor
    cls: torch.Tensor
    glyph: torch.Tensor
    u: torch.Tensor


def _separators(key: Key, lengths: torch.Tensor, spec: StringSpec) -> _Separators | None:
    """The separators of ``n`` strings of ``lengths``: an inner slot (not the first or last) holds one with
    probability ``spec.separator_rate`` unless the slot before it drew one too (so never two in a row)."""
    if spec.separator_rate <= 0.0:
        return None
    s, device = spec.max_length, lengths.device
    u = random.uniform(random.fold_in(key, _SEP_STREAM), (len(lengths), s, 8))
    pos = torch.arange(s, device=device)
    drawn = (pos >= 1) & (pos <= lengths[:, None] - 2) & (u[..., 0] < spec.separator_rate)
    mask = drawn & ~F.pad(drawn[:, :-1], (1, 0))
    pick = (u[..., 1] * len(spec.separators)).long().clamp_max(len(spec.separators) - 1)
    glyph = torch.tensor([SEPARATORS.index(c) for c in spec.separators], device=device)[pick]
    return _Separators(mask, len(DIGITS) + pick, glyph, u[..., 2:])


def _formatted(key: Key, n: int, spec: StringSpec, balanced: bool) -> tuple[torch.Tensor, _Separators]:
    """Lengths ``(n,)`` and separators of ``n`` strings that follow ``spec.formats`` (one template each, drawn
    uniformly or cycled when ``balanced``)."""
    s, device = spec.max_length, key.device
    f = len(spec.formats)
    pick = (
        torch.arange(n, device=device) % f
        if balanced
        else random.randint(random.fold_in(key, _SEP_STREAM + 1), (n,), 0, f)
    )
    alphabet = spec.alphabet
    cls = torch.tensor([[alphabet.find(c) for c in t] + [-1] * (s - len(t)) for t in spec.formats], device=device)
    cls = cls[pick]  # (n, S): a separator's class, -1 on digits and past the end
    mask = cls >= len(DIGITS)
    glyphs = torch.tensor([0] * len(DIGITS) + [SEPARATORS.index(c) for c in spec.separators], device=device)
    u = random.uniform(random.fold_in(key, _SEP_STREAM), (n, s, 8))
    lengths = torch.tensor([len(t) for t in spec.formats], device=device)[pick]
    return lengths, _Separators(mask, cls, glyphs[cls.clamp_min(0)], u[..., 2:])


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


def _separator_room(
    sep: torch.Tensor | None, gaps: torch.Tensor, centre_y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gaps ``(c, S)`` before each slot and the vertical ink centres ``(c, S)`` the layout centres on, with
    the separator slots ``sep`` given their room: no neighbour overlaps one (a gap of a pixel at least), and one
    keeps the height it was drawn at (its field centre on the line, not its ink)."""
    if sep is None:
        return gaps, centre_y
    gaps = torch.where(sep | F.pad(sep[:, :-1], (1, 0)), gaps.clamp_min(1.0), gaps)
    return gaps, torch.where(sep, 0.0, centre_y)


def _layout(
    spans: torch.Tensor,
    valid: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    spec: StringSpec,
    sep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each digit of ``c`` strings goes: ``spans`` ``(c, S, 28, 2)`` the digits' ink rows, ``valid`` ``(c, S)``
    slots in use, ``u`` ``(c, S, 6)`` in [-1, 1), ``v`` ``(c, 5)`` in [0, 1), ``sep`` ``(c, S)`` separator slots
    (``_separator_room``). Returns ``theta`` ``(c, S, 2, 3)`` (canvas -> source, grid_sample's normalised
    coordinates), ``field`` ``(c, S, 2)`` the canvas columns (first, last) each digit's field covers, widths ``(c,)``."""
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
    gaps, centre_y = _separator_room(sep, gaps, (lo[..., 1] + hi[..., 1]) / 2)
    widths = hi[..., 0] - lo[..., 0]
    left = widths.cumsum(1) - widths + gaps.cumsum(1)  # (c, S) layout x of each ink box's left edge
    off_x = left - lo[..., 0]
    off_y = spec.baseline * u[..., 4] - centre_y
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
    ``min_length .. max_length``, or cycle through them when ``balanced`` (equal counts, for evaluation sets);
    with ``spec.formats``, each string follows a template. ``chunk`` bounds memory only: the strings do not
    depend on it."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    device = pool.images.device
    key = key.to(device)
    s, h, w = spec.max_length, spec.height, spec.width
    k_len, k_idx, k_dig, k_str = random.split(key, 4)
    if spec.formats:
        lengths, seps = _formatted(key, n, spec, balanced)
    else:
        if balanced:
            lengths = spec.min_length + torch.arange(n, device=device) % (s - spec.min_length + 1)
        else:
            lengths = random.randint(k_len, (n,), spec.min_length, s + 1)
        seps = _separators(key, lengths, spec)
    rows = random.randint(k_idx, (n, s), 0, len(pool.labels))  # (n, S) pool rows
    valid = torch.arange(s, device=device)[None, :] < lengths[:, None]  # (n, S)
    u = random.uniform(k_dig, (n, s, 6)) * 2.0 - 1.0  # per digit, in [-1, 1)
    v = random.uniform(k_str, (n, 5))  # per string, in [0, 1)

    images = torch.zeros(n, 1, h, w, dtype=torch.uint8, device=device)
    widths = torch.zeros(n, dtype=torch.int64, device=device)
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        part = None if seps is None else _Separators(*(t[i:j] for t in seps))
        images[i:j], widths[i:j] = _compose(pool, rows[i:j], valid[i:j], u[i:j], v[i:j], spec, part)
    labels, digit = pool.labels[rows], valid
    if seps is not None:
        labels, digit = torch.where(seps.mask, seps.cls, labels), valid & ~seps.mask
    targets = torch.where(valid, labels, PAD)
    return Strings(images, targets, lengths, widths, torch.where(digit, rows, PAD))


def _compose(
    pool: DigitPool,
    rows: torch.Tensor,
    valid: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    spec: StringSpec,
    seps: _Separators | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of ``c`` strings: uint8 images ``(c, 1, H, W)`` and content widths ``(c,)``. Each glyph (a pool
    digit, or a drawn separator in the slots ``seps`` marks) is resampled only inside a window of columns around
    its ink, then max-composed into place."""
    c, s, h, w = len(rows), spec.max_length, spec.height, spec.width
    device = rows.device
    glyphs = pool.images[rows.flatten()]  # (c * S, 1, 28, 28)
    spans = pool.spans[rows]  # (c, S, 28, 2)
    if seps is not None:
        at = seps.mask.flatten().nonzero().squeeze(1)  # the separator slots
        drawn = _glyphs(seps.glyph.flatten()[at], seps.u.flatten(0, 1)[at])
        glyphs = glyphs.index_put((at,), drawn)
        spans = spans.flatten(0, 1).index_put((at,), _spans(drawn)).view_as(spans)
    theta, field, widths = _layout(spans, valid, u, v, spec, None if seps is None else seps.mask)
    sel = valid.flatten().nonzero().squeeze(1)  # rendered slots only
    owner = sel // s  # string of each rendered glyph, within the chunk
    span = field.flatten(0, 1)[sel]  # (K, 2) canvas columns each glyph can touch
    x0 = (span[:, 0].floor().long() - 1).clamp(0, w)  # (K,) window start columns
    wd = math.ceil(float((span[:, 1] - x0).amax())) + 2 if len(sel) else 1  # one window width for all
    wp = w + wd  # a padded canvas row: windows never wrap into the next row
    x = glyphs[sel].float() / 255.0  # (K, 1, 28, 28)
    x = _stroke(x, spec.stroke * u[..., 5].flatten()[sel])
    grid = _window_grid(theta.flatten(0, 1)[sel], x0, h, w, wd)  # (K, H, wd, 2)
    ink = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (K, 1, H, wd)
    r = torch.arange(h, device=device)[:, None] * wp + torch.arange(wd, device=device)  # (H, wd)
    where = (owner * (h * wp) + x0)[:, None, None] + r  # (K, H, wd) flat canvas positions
    canvas = torch.zeros(c * h * wp, device=device)  # composition: the brightest ink wins
    canvas = canvas.scatter_reduce(0, where.flatten(), ink.flatten(), "amax").view(c, 1, h, wp)[..., :w]
    return (canvas.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8), widths


def fixed_set(pool: DigitPool, n: int, spec: StringSpec = StringSpec(), *, seed: int = TEST_SEED) -> Strings:
    """The seeded evaluation strings of ``pool``: ``n`` strings, lengths balanced, the same on every call."""
    return render(random.key(seed), pool, n, spec, balanced=True)
