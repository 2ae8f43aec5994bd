"""Single handwritten digits photographed in conditions ``benchmarks/photo_digits.py`` does not cover: graph paper
(light and dark grid, and pencil on it), a lined notebook, a dot grid, the digit circled or underlined by hand, hard
and soft cast shadows, glare, a sheet shot at an angle on a desk or lying on a light desk, a sticky note, out of
focus, a tiny digit in a large photo, pencil, red and green ink, a 300 dpi scan at JPEG quality 40, a neighbouring
digit in the crop, a thumb at the edge, an EXIF-rotated photo and a desk lamp's pool of light. Measures the
accuracy per condition of ``hwr predict``'s path (``load_image`` -> ``mnist_style`` -> the model); a file
``load_image`` refuses counts as wrong.

    python benchmarks/photo_conditions.py --model RUN_DIR [--n 30] [--seed 7] [--keep DIR] [--json PATH]

File ``i`` of every condition carries the same glyph (digit ``i % 10``, the hands of ``benchmarks/fonts.py`` and
``benchmarks/digit_folder.py`` in turn, same size and tilt) as the clean control's file ``i``, so a condition differs
from the control only by what it adds. With ``--seed 7 --n 30`` and the five fonts installed the control reads 100%.
Without ``--model`` it trains the ``fast`` recipe once, as ``photo_digits.py`` does.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from benchmarks.digit_folder import STROKES, _drawn, _typed
from benchmarks.fonts import installed_fonts
from benchmarks.photo_digits import _model
from hwr.data import digits
from hwr.errors import InputError

__all__ = ["CONDITIONS", "glyph", "main", "render"]

WHITE = np.array([250.0, 250.0, 248.0])
BLACK = np.array([20.0, 20.0, 25.0])
BLUE_PEN = np.array([30.0, 40.0, 120.0])
Made = tuple[Image.Image, dict[str, Any]]  # a condition's image and its save() arguments (quality: a JPEG)
Rng = np.random.Generator


@functools.cache
def hands() -> list[str]:
    """The hands glyphs are written in: the installed handwriting fonts, then the stroke hand."""
    return [*installed_fonts(), STROKES]


def glyph(i: int, seed: int) -> tuple[int, str, np.ndarray]:
    """Glyph ``i``: (digit, hand, tight ink mask in ``[0, 1]``), 120-260 px across, tilted up to 8 degrees."""
    rng = np.random.default_rng([seed, i])
    digit, hand = i % 10, hands()[(i // 10 + i) % len(hands())]
    size = int(rng.integers(120, 260))
    m = _drawn(digit, rng, size) if hand == STROKES else _typed(digit, hand, rng, size)
    a = np.asarray(m.rotate(float(rng.uniform(-8, 8)), resample=Image.BICUBIC, expand=True), np.float32) / 255.0
    rows, cols = np.flatnonzero(a.max(1) > 0.05), np.flatnonzero(a.max(0) > 0.05)
    return digit, Path(hand).stem, a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _scaled(a: np.ndarray, f: float) -> np.ndarray:
    """The mask ``a`` resized by ``f`` (Lanczos)."""
    h, w = a.shape
    im = Image.fromarray((a * 255).astype(np.uint8)).resize((max(2, round(w * f)), max(2, round(h * f))), Image.LANCZOS)
    return np.clip(np.asarray(im, np.float32) / 255.0, 0, 1)


def _layout(g: np.ndarray, rng: Rng, lo: float = 0.35, hi: float = 0.8) -> tuple[np.ndarray, int, int]:
    """An alpha canvas with ``g`` on it, margins ``lo..hi`` of its size; returns (alpha, top, left)."""
    gh, gw = g.shape
    m = [int(rng.uniform(lo, hi) * max(gh, gw)) for _ in range(4)]
    a = np.zeros((gh + m[0] + m[2], gw + m[1] + m[3]), np.float32)
    a[m[0] : m[0] + gh, m[1] : m[1] + gw] = g
    return a, m[0], m[1]


def _compose(paper: np.ndarray, a: np.ndarray, ink: Any) -> np.ndarray:
    """``ink`` (RGB) over ``paper`` (H, W, 3) with alpha ``a``; the ink only darkens."""
    return paper * (1 - a[..., None]) + np.minimum(paper, ink) * a[..., None]


def _flat(h: int, w: int, rgb: Any) -> np.ndarray:
    """An (h, w, 3) float image of one colour."""
    return np.zeros((h, w, 3)) + np.asarray(rgb, np.float64)


def _img(rgb: np.ndarray) -> Image.Image:
    """``rgb`` clipped to uint8 as a PIL image."""
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _photo(rgb: np.ndarray, rng: Rng, sigma: float = 3.0, quality: int = 90) -> Made:
    """``rgb`` with sensor noise of ``sigma`` grey levels, saved as a JPEG of ``quality``."""
    return _img(rgb + rng.normal(0, sigma, rgb.shape)), {"quality": quality}


def _pen(a: np.ndarray, rng: Rng, ink: Any = BLUE_PEN, paper: Any = WHITE) -> Made:
    """The alpha ``a`` in ``ink`` on plain ``paper``, photographed."""
    return _photo(_compose(_flat(*a.shape, paper), a, ink), rng)


def _grid(h: int, w: int, s: float, wid: int | None, rng: Rng, major: bool = False) -> np.ndarray:
    """Grid lines every ``s`` px, ``wid`` wide (None: 1-2 px, drawn after the offsets), every 5th bolder if ``major``."""
    lines = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(lines)
    ox, oy = rng.uniform(0, s), rng.uniform(0, s)
    wid = int(rng.integers(1, 3)) if wid is None else wid
    for k in range(int(max(h, w) / s) + 2):
        wk = wid + (1 if major and k % 5 == 0 else 0)
        d.line((ox + k * s, 0, ox + k * s, h), fill=255, width=wk)
        d.line((0, oy + k * s, w, oy + k * s), fill=255, width=wk)
    return np.asarray(lines, np.float32) / 255.0


def _graphite(paper: np.ndarray, a: np.ndarray, rng: Rng) -> Made:
    """Pencil on ``paper``: graphite grey 95-140, the strokes grainy by the paper's tooth (alpha 0.45-1)."""
    tooth = ndimage.gaussian_filter(rng.random(a.shape), 0.8)
    tooth = (tooth - tooth.min()) / (np.ptp(tooth) + 1e-9)
    gr = rng.uniform(95, 140)
    return _photo(_compose(paper, a * np.clip(0.45 + 0.9 * tooth, 0, 1), [gr, gr, gr + 5]), rng, 4)


def _stroke(a: np.ndarray, g: np.ndarray, pts: np.ndarray, f: float, rng: Rng, wobble: float) -> np.ndarray:
    """``a`` with a hand-drawn line through ``pts`` (jittered by ``wobble`` px), ``f`` times the glyph's strokes wide."""
    core = g > 0.5
    width = max(2, round(2.0 * core.sum() / max((core & ~ndimage.binary_erosion(core)).sum(), 1) * f))
    pts = pts + rng.normal(0, wobble, (len(pts), 2))
    m = Image.new("L", (a.shape[1], a.shape[0]), 0)
    ImageDraw.Draw(m).line([tuple(p) for p in pts], fill=255, width=width, joint="curve")
    return np.maximum(a, np.asarray(m, np.float32) / 255.0)


def c_control(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Clean black on white, PNG."""
    a, _, _ = _layout(g, rng)
    return _img(_compose(_flat(*a.shape, WHITE), a, BLACK)), {}


def c_control_photo(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Blue pen on white, noise 3, JPEG q90."""
    return _pen(_layout(g, rng)[0], rng)


def c_graph(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Squared paper, light blue or grey lines every ~5 mm (the digit 2-3 cells high), some with bolder 5th lines."""
    a, _, _ = _layout(g, rng)
    s = g.shape[0] * rng.uniform(0.33, 0.5)
    col = np.array([150, 190, 230.0]) if rng.random() < 0.6 else np.array([175, 175, 175.0])
    paper = _compose(_flat(*a.shape, WHITE), _grid(*a.shape, s, None, rng, major=rng.random() < 0.5), col)
    return _photo(_compose(paper, a, BLUE_PEN if rng.random() < 0.5 else BLACK), rng)


def c_graph_dark(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Squared paper whose 2-3 px grid comes out dark (green, grey, blue; luminance 0.45-0.6), lighter than the pen."""
    a, _, _ = _layout(g, rng)
    grid = _grid(*a.shape, g.shape[0] * rng.uniform(0.33, 0.5), int(rng.integers(2, 4)), rng)
    paper = _compose(_flat(*a.shape, WHITE), grid, np.array([[90, 150, 110], [125, 125, 130], [90, 130, 200]][i % 3]))
    return _photo(_compose(paper, a, BLACK if i % 2 else BLUE_PEN), rng)


def c_pencil_graph(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Pencil on light-blue squared paper."""
    a, _, _ = _layout(g, rng)
    grid = _grid(*a.shape, g.shape[0] * rng.uniform(0.33, 0.5), int(rng.integers(1, 3)), rng)
    return _graphite(_compose(_flat(*a.shape, [245, 244, 240]), grid, np.array([150, 190, 230.0])), a, rng)


def c_lined(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Notebook paper: blue rules (the digit sitting on one) and a red margin line to its left."""
    gh = g.shape[0]
    a, top, left = _layout(g, rng)
    H, W = a.shape
    s = gh * rng.uniform(1.05, 1.35)
    y = top + gh + rng.uniform(-0.04, 0.02) * gh  # the rule the digit sits on
    lines = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(lines)
    wid = int(rng.integers(1, 4))
    while y > -s:
        y -= s
    while y < H + s:
        d.line((0, y, W, y), fill=255, width=wid)
        y += s
    paper = _compose(_flat(H, W, WHITE), np.asarray(lines, np.float32) / 255.0, np.array([130, 165, 220.0]))
    m = Image.new("L", (W, H), 0)
    mx = rng.uniform(0.08, 0.8) * left
    ImageDraw.Draw(m).line((mx, 0, mx + rng.uniform(-3, 3), H), fill=255, width=int(rng.integers(2, 4)))
    paper = _compose(paper, np.asarray(m, np.float32) / 255.0, np.array([215, 70, 80.0]))
    return _photo(_compose(paper, a, BLUE_PEN if rng.random() < 0.6 else BLACK), rng)


def c_dots(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Dot-grid paper: grey dots every ~5 mm."""
    a, _, _ = _layout(g, rng)
    H, W = a.shape
    s, r = g.shape[0] * rng.uniform(0.33, 0.5), rng.uniform(1.2, 2.5)
    dots = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(dots)
    ox, oy = rng.uniform(0, s), rng.uniform(0, s)
    for yy in np.arange(oy, H, s):
        for xx in np.arange(ox, W, s):
            d.ellipse((xx - r, yy - r, xx + r, yy + r), fill=255)
    paper = _compose(_flat(H, W, WHITE), np.asarray(dots, np.float32) / 255.0, np.array([140, 140, 145.0]))
    return _photo(_compose(paper, a, BLUE_PEN), rng)


def c_circled(g: np.ndarray, rng: Rng, i: int) -> Made:
    """The digit circled by hand in the same pen, the ends overlapping, wobbly."""
    gh, gw = g.shape
    a, top, left = _layout(g, rng, 0.6, 0.9)
    ry, rx = 0.5 * gh * rng.uniform(1.2, 1.4), 0.5 * max(gw, 0.6 * gh) * rng.uniform(1.3, 1.6)
    t0 = rng.uniform(0, 360)
    t = np.deg2rad(np.linspace(t0, t0 + rng.uniform(370, 400), 60))
    grow = np.linspace(1.0, rng.uniform(0.9, 1.1), len(t))
    pts = np.stack([left + gw / 2 + rx * grow * np.cos(t), top + gh / 2 + ry * grow * np.sin(t)], 1)
    return _pen(_stroke(a, g, pts, rng.uniform(0.5, 0.9), rng, gh * 0.01), rng)


def c_underlined(g: np.ndarray, rng: Rng, i: int) -> Made:
    """The digit underlined by hand: a stroke 1-1.5 digit widths long a little under it."""
    gh, gw = g.shape
    a, top, left = _layout(g, rng, 0.5, 0.8)
    y = top + gh + rng.uniform(0.06, 0.18) * gh
    n = max(gw, 0.6 * gh) * rng.uniform(1.0, 1.5)
    cx = left + gw / 2 + rng.uniform(-0.1, 0.1) * gw
    x = np.linspace(cx - n / 2, cx + n / 2, 12)
    pts = np.stack([x, y + rng.uniform(-0.06, 0.06) * (x - cx) + 0.02 * gh * np.sin(np.linspace(0, np.pi, 12))], 1)
    return _pen(_stroke(a, g, pts, rng.uniform(0.6, 1.0), rng, gh * 0.005), rng)


def c_shadow(g: np.ndarray, rng: Rng, i: int, soft: bool = False) -> Made:
    """A cast shadow: a half-plane through the digit's box at any angle, the light cut to 45-65%, its edge blurred
    2-6 px (``soft``: 20-50 px)."""
    gh, gw = g.shape
    a, top, left = _layout(g, rng)
    H, W = a.shape
    rgb = _compose(_flat(H, W, WHITE), a, BLUE_PEN)
    py, px = top + rng.uniform(0.1, 0.9) * gh, left + rng.uniform(0.1, 0.9) * gw
    th = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:H, 0:W]
    side = ((xx - px) * np.cos(th) + (yy - py) * np.sin(th)) > 0
    sh = ndimage.gaussian_filter(side.astype(np.float32), rng.uniform(20, 50) if soft else rng.uniform(2, 6))
    return _photo(rgb * (1 - (1 - rng.uniform(0.45, 0.65)) * sh)[..., None], rng)


def c_glare(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Glare on glossy paper: a white blob over part of the digit, the ink under its core at a fifth of its contrast."""
    gh, gw = g.shape
    a, top, left = _layout(g, rng)
    H, W = a.shape
    rgb = _compose(_flat(H, W, np.array([235, 232, 225.0])), a, BLUE_PEN)
    cy, cx = top + gh * rng.uniform(0.0, 1.0), left + gw * rng.uniform(0.0, 1.0)
    sy, sx = gh * rng.uniform(0.15, 0.35), gw * rng.uniform(0.3, 0.6) + 5
    yy, xx = np.mgrid[0:H, 0:W]
    k = np.clip(rng.uniform(0.9, 1.3) * np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2)), 0, 1)
    return _photo(rgb + (255 - rgb) * (k**1.5)[..., None] * 0.75, rng)  # a screen blend up to 0.75


def _perspective_coeffs(src: list, dst: list) -> list[float]:
    """PIL ``PERSPECTIVE`` coefficients mapping the output points ``dst`` to the input points ``src``."""
    A, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        A += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    return np.linalg.solve(np.asarray(A, float), np.asarray(b, float)).tolist()


def c_keystone(g: np.ndarray, rng: Rng, i: int) -> Made:
    """A sheet on a mid-dark desk shot at an angle: the far edge 10-22% narrower, the sheet a little squashed."""
    a, _, _ = _layout(g, rng, 0.6, 1.0)
    H, W = a.shape
    sheet = _compose(_flat(H, W, np.array([242, 240, 232.0])), a, BLUE_PEN)
    pad = [int(rng.uniform(0.08, 0.18) * max(H, W)) for _ in range(4)]
    desk = np.array([rng.uniform(90, 140), rng.uniform(70, 110), rng.uniform(50, 80)])
    TH, TW = H + pad[0] + pad[2], W + pad[1] + pad[3]
    table = _flat(TH, TW, desk)
    table[pad[0] : pad[0] + H, pad[1] : pad[1] + W] = sheet
    k, sq = rng.uniform(0.10, 0.22) * W / 2, rng.uniform(0.0, 0.08) * H
    x0, x1, y0, y1 = pad[1], pad[1] + W, pad[0], pad[0] + H
    src = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if rng.random() < 0.5:  # the far edge at the top
        dst = [(x0 + k, y0 + sq), (x1 - k, y0 + sq), (x1, y1), (x0, y1)]
    else:  # to one side
        dst = [(x0 + sq, y0 + k), (x1, y0), (x1, y1), (x0 + sq, y1 - k)]
    fill = tuple(int(c) for c in desk)
    im = _img(table).transform(
        (TW, TH), Image.PERSPECTIVE, _perspective_coeffs(src, dst), Image.BICUBIC, fillcolor=fill
    )
    return _photo(np.asarray(im, np.float64), rng, 4, 85)


def c_light_desk(g: np.ndarray, rng: Rng, i: int) -> Made:
    """The sheet (240-252) on a white table (205-230), a faint shadow along two of its edges."""
    a, _, _ = _layout(g, rng)
    H, W = a.shape
    p = rng.uniform(240, 252)
    sheet = _compose(_flat(H, W, [p, p, p - 3]), a, BLUE_PEN)
    pad = [int(rng.uniform(0.08, 0.2) * max(H, W)) for _ in range(4)]
    t = rng.uniform(205, 230)
    table = _flat(H + pad[0] + pad[2], W + pad[1] + pad[3], [t, t, t + 2])
    sh = np.zeros(table.shape[:2], np.float32)
    sh[pad[0] + 4 : pad[0] + H + 6, pad[1] + 4 : pad[1] + W + 6] = 1
    table = table * (1 - 0.12 * ndimage.gaussian_filter(sh, 4))[..., None]
    table[pad[0] : pad[0] + H, pad[1] : pad[1] + W] = sheet
    return _photo(table, rng)


def c_sticky(g: np.ndarray, rng: Rng, i: int) -> Made:
    """A yellow sticky note on a white page, the digit written on the note."""
    a, _, _ = _layout(g, rng, 0.25, 0.45)
    h, w = a.shape
    note = _compose(_flat(h, w, [rng.uniform(245, 255), rng.uniform(228, 242), rng.uniform(95, 140)]), a, BLUE_PEN)
    pad = [int(rng.uniform(0.15, 0.45) * max(h, w)) for _ in range(4)]
    page = _flat(h + pad[0] + pad[2], w + pad[1] + pad[3], [248, 248, 246])
    page[pad[0] : pad[0] + h, pad[1] : pad[1] + w] = note
    return _photo(page, rng)


def c_blur(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Out of focus: a 1000x750 photo, the digit 150-250 px high in it, Gaussian blur of sigma 2-4 px."""
    g2 = _scaled(g, rng.uniform(150, 250) / g.shape[0])
    H, W = (750, 1000) if rng.random() < 0.5 else (1000, 750)
    a = np.zeros((H, W), np.float32)
    y, x = int(rng.uniform(0.25, 0.75) * (H - g2.shape[0])), int(rng.uniform(0.25, 0.75) * (W - g2.shape[1]))
    a[y : y + g2.shape[0], x : x + g2.shape[1]] = g2
    return _photo(
        ndimage.gaussian_filter(_compose(_flat(H, W, WHITE), a, BLUE_PEN), (rng.uniform(2, 4),) * 2 + (0,)), rng
    )


def c_tiny(g: np.ndarray, rng: Rng, i: int) -> Made:
    """A very small digit (20-40 px high) in a 1600x1200 photo of mostly empty paper."""
    g2 = _scaled(g, rng.uniform(20, 40) / g.shape[0])
    a = np.zeros((1200, 1600), np.float32)
    y, x = int(rng.uniform(0.2, 0.7) * 1200), int(rng.uniform(0.2, 0.7) * 1600)
    a[y : y + g2.shape[0], x : x + g2.shape[1]] = g2
    return _pen(a, rng, paper=[240, 238, 232])


def c_pencil(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Pencil on plain paper."""
    a, _, _ = _layout(g, rng)
    return _graphite(_flat(*a.shape, [245, 244, 240]), a, rng)


def c_colour_ink(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Red or green ink on white paper."""
    return _pen(_layout(g, rng)[0], rng, np.array([[205, 35, 40], [225, 60, 60], [30, 140, 60], [60, 170, 90]][i % 4]))


def c_scan300(g: np.ndarray, rng: Rng, i: int) -> Made:
    """A grey 300 dpi scan (the digit 8-12 mm, 95-140 px high) of a region of paper, JPEG quality 40."""
    a, _, _ = _layout(_scaled(g, rng.uniform(95, 140) / g.shape[0]), rng, 0.5, 1.2)
    p = rng.uniform(238, 250)
    im, _ = _photo(_compose(_flat(*a.shape, [p, p, p]), a, BLACK if i % 2 else BLUE_PEN), rng, 2)
    return im.convert("L"), {"quality": 40}


def c_neighbour(g: np.ndarray, rng: Rng, i: int, seed: int = 0, n: int = 30) -> Made:
    """A crop from a form: the digit, and another digit scaled to its height partly in the crop at one side (a third
    to two thirds of its width), margins above and below 10-25%."""
    gh, gw = g.shape
    j = (i + 10 * int(rng.integers(1, 3)) + int(rng.integers(1, 9))) % max(n, 30)
    ng = glyph(j + 1000, seed)[2]
    ng = _scaled(ng, gh / ng.shape[0])
    gap = int(rng.uniform(0.1, 0.3) * gw) + 2
    vis = max(2, int(rng.uniform(0.33, 0.67) * ng.shape[1]))
    m_tb = [int(rng.uniform(0.1, 0.25) * gh) for _ in range(2)]
    H, W = gh + sum(m_tb), vis + gap + gw + int(rng.uniform(0.15, 0.35) * gw)
    a = np.zeros((H, W), np.float32)
    right = rng.random() < 0.5
    oy = max(m_tb[0] + int(rng.uniform(-0.05, 0.05) * gh), 0)
    nh = min(ng.shape[0], H - oy)
    x0 = W - vis - gap - gw if right else vis + gap
    a[m_tb[0] : m_tb[0] + gh, x0 : x0 + gw] = g
    if right:
        a[oy : oy + nh, W - vis :] = ng[:nh, :vis]
    else:
        a[oy : oy + nh, :vis] = ng[:nh, -vis:]
    return _pen(a, rng)


def c_thumb(g: np.ndarray, rng: Rng, i: int) -> Made:
    """A thumb at the image's edge: a skin-coloured ellipse reaching 15-30% in from one side, shaded, soft edged."""
    a, _, _ = _layout(g, rng, 0.6, 1.0)
    H, W = a.shape
    rgb = _compose(_flat(H, W, WHITE), a, BLUE_PEN)
    side = int(rng.integers(4))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    reach = rng.uniform(0.15, 0.3)
    if side in (0, 1):  # top / bottom
        cx = rng.uniform(0.2, 0.8) * W
        cy = (reach * H - 0.6 * H) if side == 0 else (H - reach * H + 0.6 * H)
        rx, ry = rng.uniform(0.12, 0.2) * W, 0.6 * H
    else:
        cy = rng.uniform(0.2, 0.8) * H
        cx = (reach * W - 0.6 * W) if side == 2 else (W - reach * W + 0.6 * W)
        rx, ry = 0.6 * W, rng.uniform(0.12, 0.2) * H
    r = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    m = ndimage.gaussian_filter((r <= 1).astype(np.float32), rng.uniform(2, 5))[..., None]
    skin = np.array([rng.uniform(200, 235), rng.uniform(150, 185), rng.uniform(120, 150)])
    shade = np.clip(1.05 - 0.35 * r, 0.6, 1.0)[..., None]  # darker toward its rim
    return _photo(rgb * (1 - m) + skin * shade * m, rng)


def c_exif(g: np.ndarray, rng: Rng, i: int) -> Made:
    """A phone photo stored sideways with an EXIF orientation tag (6 or 8) that turns it upright."""
    im, kw = _pen(_layout(g, rng)[0], rng, paper=[240, 238, 232])
    exif = Image.Exif()
    exif[0x0112] = 6 if i % 2 else 8
    return im.transpose(Image.ROTATE_90 if i % 2 else Image.ROTATE_270), {**kw, "exif": exif}


def c_graph_turned(g: np.ndarray, rng: Rng, i: int) -> Made:
    """Squared paper photographed turned 0.3-3 degrees, the glyph 1, 2 or 3.5 times its size (a phone's pixels),
    the grid light (1-2 px times the root of that) or dark (2-3.5 px times it, grey, green or blue), so the lines
    nearest the edges leave the image part way across. A glyph is scaled to 1,500 pixels at most (a string's)."""
    f = min([1.0, 2.0, 3.5][i % 3], 1500 / max(g.shape))
    g = _scaled(g, f) if f != 1 else g
    a, _, _ = _layout(g, rng)
    h, w = a.shape
    dark = i % 2 == 1
    width = max(2 if dark else 1, round((rng.uniform(2.0, 3.5) if dark else rng.uniform(1.0, 2.5)) * f**0.5))
    side = int(max(h, w) * 1.5)
    grid = _grid(side, side, g.shape[0] * rng.uniform(0.33, 0.5), width, rng)
    angle = rng.uniform(0.3, 3.0) * rng.choice([-1, 1])
    turned = Image.fromarray((grid * 255).astype(np.uint8)).rotate(angle, resample=Image.BICUBIC)
    y0, x0 = (side - h) // 2, (side - w) // 2
    grid = np.asarray(turned, np.float32)[y0 : y0 + h, x0 : x0 + w] / 255.0
    col = [[90, 150, 110], [125, 125, 130], [90, 130, 200]][i % 3] if dark else [150, 190, 230.0]
    paper = _compose(_flat(h, w, WHITE), grid, np.array(col, np.float64))
    return _photo(_compose(paper, a, BLUE_PEN if rng.random() < 0.5 else BLACK), rng)


def c_pool_of_light(g: np.ndarray, rng: Rng, i: int) -> Made:
    """A desk lamp's pool of light (or a phone's strong vignetting): the paper bright round a point up to a fifth of
    the image off its centre, falling smoothly to 15-35% of that at the far corners."""
    a, _, _ = _layout(g, rng)
    h, w = a.shape
    rgb = _compose(_flat(h, w, [246, 244, 238]), a, BLUE_PEN if i % 2 else BLACK)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h / 2 * (1 + rng.uniform(-0.2, 0.2)), w / 2 * (1 + rng.uniform(-0.2, 0.2))
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    rim = rng.uniform(0.15, 0.35)
    light = np.clip(1 - (1 - rim) * r2 ** rng.uniform(0.8, 1.5), rim / 2, 1)
    return _photo(rgb * light[..., None], rng, 4, 85)


CONDITIONS: dict[str, Callable[[np.ndarray, Rng, int], Made]] = {
    "control (clean PNG)": c_control,
    "control photo (blue pen, noise 3, q90)": c_control_photo,
    "graph paper (5 mm grid)": c_graph,
    "graph paper, dark grid": c_graph_dark,
    "pencil on graph paper": c_pencil_graph,
    "lined notebook + red margin": c_lined,
    "dot grid": c_dots,
    "circled by hand": c_circled,
    "underlined by hand": c_underlined,
    "hard cast shadow": c_shadow,
    "soft cast shadow (penumbra 20-50 px)": functools.partial(c_shadow, soft=True),
    "glare on glossy paper": c_glare,
    "keystone on desk": c_keystone,
    "sheet on a light desk": c_light_desk,
    "sticky note on page": c_sticky,
    "out of focus (sigma 2-4 @1000px)": c_blur,
    "tiny digit in 1600x1200": c_tiny,
    "pencil": c_pencil,
    "red / green ink": c_colour_ink,
    "scan 300dpi JPEG q40": c_scan300,
    "neighbour digit in crop": c_neighbour,
    "thumb at the edge": c_thumb,
    "EXIF rotated 90": c_exif,
    "graph paper turned 0.3-3 degrees": c_graph_turned,
    "pool of lamp light (rim 15-35%)": c_pool_of_light,
}


def render(folder: Path, n: int, seed: int) -> list[tuple[str, Path, int, str]]:
    """``n`` files per condition as ``folder/cNN/iii_digit_hand.(png|jpg)``: ``(condition, path, digit, hand)`` each."""
    out: dict[str, list[tuple[str, Path, int, str]]] = {name: [] for name in CONDITIONS}
    for i in range(n):
        digit, hand, g = glyph(i, seed)
        for c, (name, make) in enumerate(CONDITIONS.items()):
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), i])  # the same files if conditions are added
            im, kw = c_neighbour(g, rng, i, seed, n) if make is c_neighbour else make(g, rng, i)
            path = folder / f"c{c:02d}" / f"{i:03d}_{digit}_{hand}.{'jpg' if 'quality' in kw else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path, **kw)
            out[name].append((name, path, digit, hand))
    return [row for rows in out.values() for row in rows]  # condition by condition


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Render the files, read them as ``hwr predict`` does, print and return the accuracy per condition."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="digit run folder (default: train the fast recipe once)")
    ap.add_argument("--n", type=int, default=30, help="files per condition")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", default=None, help="write the images here instead of a temporary folder")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    classify, run_dir = _model(args.model)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = render(Path(args.keep or tmp), args.n, args.seed)
        inputs = []
        for _, path, _, _ in files:
            try:
                inputs.append(digits.mnist_style(digits.load_image(path)))
            except InputError:
                inputs.append(None)
    x = torch.stack([t if t is not None else torch.zeros(1, 28, 28, dtype=torch.uint8) for t in inputs])
    pred = torch.cat([classify(x[k : k + 256]) for k in range(0, len(x), 256)]).tolist()
    for (name, _, digit, _), t, p in zip(files, inputs, pred):
        r = rows.setdefault(name, {"accuracy": 0.0, "files": 0, "refused": 0})
        r["accuracy"] += float(t is not None and p == digit)
        r["files"] += 1
        r["refused"] += int(t is None)
    names = ", ".join(Path(h).stem for h in hands())
    print(f"model {run_dir}; {args.n} files per condition, seed {args.seed}, hands: {names}")
    print(f"{'condition':<40} {'accuracy':>8} {'files':>5} {'refused':>7}")
    for name, r in rows.items():
        r["accuracy"] /= r["files"]
        print(f"{name:<40} {100 * r['accuracy']:7.1f}% {r['files']:5d} {r['refused']:7d}")
    result = {"model": run_dir, "n": args.n, "seed": args.seed, "conditions": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
