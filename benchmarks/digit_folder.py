"""An image folder of handwritten-looking digits, as a researcher would have one: ``OUT/train/<digit>/``,
``OUT/val/<digit>/`` and ``OUT/test/<digit>/`` for ``hwr ... --dataset folder:OUT``.

    python benchmarks/digit_folder.py OUT [--seed N] [--tail 3] [--head 60] [--val 10] [--test 30]
    hwr data info folder:OUT

Single digits written by several hands: the handwriting-style fonts installed (``benchmarks/fonts.py`` names the
Debian packages) and a hand of our own, stroke drawings with jittered control points (the only hand where no
font is installed). Every image is jittered (rotation, stroke width, size, position and margins), saved as PNG or
(every fourth) JPEG, and a third look photo-like: tinted paper, uneven light, pen-coloured ink, mild noise and blur;
a few are light ink on a dark board. ``train/`` is long-tailed, head to tail ``0`` .. ``9`` with exponentially
fewer images (``--head`` down to ``--tail``); ``val/`` and ``test/`` are balanced (``--val``, ``--test`` per class),
written by the same hands. Offline, in a few seconds; the same seed writes the same files.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from benchmarks.fonts import installed_fonts

__all__ = ["STROKES", "long_tail", "main", "write_folder"]

CLASSES = [str(d) for d in range(10)]
STROKES = "strokes"  # the hand of our own: polylines in a unit box, see _strokes


def long_tail(head: int, tail: int, classes: int = 10) -> list[int]:
    """Images per class, head to tail: ``head * (tail / head) ** (c / (C - 1))`` rounded, ``head`` .. ``tail``."""
    return [round(head * (tail / head) ** (c / (classes - 1))) for c in range(classes)]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 12) -> list[tuple[float, float]]:
    """Points of an elliptic arc from angle ``a0`` to ``a1`` degrees (0: right, 90: down)."""
    return [
        (
            cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
            cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n)),
        )
        for i in range(n + 1)
    ]


def _strokes(digit: int) -> list[list[tuple[float, float]]]:
    """The strokes of ``digit`` in a unit box (x right, y down), each a polyline."""
    return {
        0: [_arc(0.5, 0.5, 0.32, 0.45, -90, 275, 20)],
        1: [[(0.32, 0.25), (0.55, 0.05), (0.55, 0.95)]],
        2: [[*_arc(0.5, 0.32, 0.3, 0.27, 200, 380), (0.18, 0.95), (0.85, 0.95)]],
        3: [_arc(0.48, 0.28, 0.28, 0.23, 210, 450) + _arc(0.48, 0.72, 0.32, 0.24, -90, 150)],
        4: [[(0.62, 0.95), (0.62, 0.05), (0.12, 0.68), (0.9, 0.68)]],
        5: [[(0.8, 0.05), (0.28, 0.05), (0.22, 0.45), *_arc(0.5, 0.66, 0.32, 0.29, 220, 500)[2:]]],
        6: [[(0.72, 0.05), *_arc(0.5, 0.66, 0.3, 0.29, 200, 560, 24)]],
        7: [[(0.12, 0.06), (0.88, 0.06), (0.4, 0.95)], [(0.3, 0.5), (0.75, 0.5)]],
        8: [_arc(0.5, 0.27, 0.24, 0.22, 90, 450, 18) + _arc(0.5, 0.71, 0.3, 0.24, -90, 270, 18)],
        9: [[*_arc(0.5, 0.32, 0.3, 0.27, 0, 360, 18), (0.8, 0.32), (0.62, 0.95)]],
    }[digit]


def _drawn(digit: int, rng: np.random.Generator, size: int) -> Image.Image:
    """An ink mask (L, ink 255) of ``digit`` in the stroke hand: control points jittered, width varied."""
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    width = max(2, int(size * rng.uniform(0.05, 0.12)))
    slant = rng.uniform(-0.15, 0.15)
    for stroke in _strokes(digit):
        pts = np.asarray(stroke) + rng.normal(0, 0.015, (len(stroke), 2))
        pts[:, 0] += slant * (0.5 - pts[:, 1])
        d.line(
            [(0.1 * size + 0.8 * size * x, 0.1 * size + 0.8 * size * y) for x, y in pts],
            fill=255,
            width=width,
            joint="curve",
        )
    return mask


def _typed(digit: int, font: str, rng: np.random.Generator, size: int) -> Image.Image:
    """An ink mask (L, ink 255) of ``digit`` written in ``font``, stroke width varied."""
    face = ImageFont.truetype(font, size)
    bold = int(rng.integers(0, max(2, size // 24)))
    x0, y0, x1, y1 = face.getbbox(str(digit), stroke_width=bold)
    mask = Image.new("L", (x1 - x0 + size // 3, y1 - y0 + size // 3), 0)
    ImageDraw.Draw(mask).text(
        (size // 6 - x0, size // 6 - y0), str(digit), font=face, fill=255, stroke_width=bold, stroke_fill=255
    )
    return mask


def _paper(mask: Image.Image, rng: np.random.Generator, look: str) -> Image.Image:
    """``mask`` as ink on paper: ``plain`` (dark on white), ``photo`` (tinted paper, uneven light, pen ink, noise,
    blur) or ``board`` (light chalk on a dark ground)."""
    a = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    h, w = a.shape[:2]
    if look == "board":
        ground, ink = np.array([40, 52, 45]) + rng.uniform(-10, 10, 3), np.array([235, 235, 225])
    elif look == "photo":
        ground = np.array([236, 228, 205]) + rng.uniform(-20, 12, 3)
        ink = np.array([[30, 40, 120], [25, 25, 30], [60, 30, 30]][int(rng.integers(0, 3))], dtype=np.float64)
    else:
        ground, ink = np.array([255.0, 255.0, 255.0]), np.array([15.0, 15.0, 15.0]) + rng.uniform(0, 30)
    rgb = ground * (1 - a) + ink * a
    if look == "photo":
        yy, xx = np.mgrid[0:h, 0:w]
        light = 1.0 - 0.18 * ((xx / w) * rng.uniform(-1, 1) + (yy / h) * rng.uniform(-1, 1)) ** 2
        rgb = rgb * light[..., None] + rng.normal(0, 6, rgb.shape)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9))) if look == "photo" else img


def _image(digit: int, hand: str, rng: np.random.Generator) -> Image.Image:
    """One jittered image of ``digit`` by ``hand``: rotated, placed off-centre with uneven margins, on paper."""
    size = int(rng.integers(32, 140))
    mask = _drawn(digit, rng, size) if hand == STROKES else _typed(digit, hand, rng, size)
    mask = mask.rotate(float(rng.uniform(-12, 12)), resample=Image.BICUBIC, expand=True)
    left, top, right, bottom = (int(rng.integers(2, max(3, size // 3))) for _ in range(4))
    framed = Image.new("L", (mask.width + left + right, mask.height + top + bottom), 0)
    framed.paste(mask, (left, top))
    look = "board" if rng.random() < 0.08 else "photo" if rng.random() < 0.33 else "plain"
    return _paper(framed, rng, look)


def write_folder(out: Path, counts: dict[str, list[int]], hands: list[str], seed: int = 0) -> int:
    """Write ``counts[split][digit]`` images per split and digit under ``out``, the hands in turn; returns the
    number of files."""
    rng = np.random.default_rng(seed)
    n = 0
    for split, per_class in counts.items():
        for digit, k in enumerate(per_class):
            folder = out / split / CLASSES[digit]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(k):
                hand = hands[(i + digit) % len(hands)]
                img = _image(digit, hand, rng)
                path = folder / f"{digit}_{i:03d}.{'jpg' if n % 4 == 3 else 'png'}"
                img.save(path, **({"quality": int(rng.integers(70, 95))} if path.suffix == ".jpg" else {}))
                n += 1
    return n


def main(argv: list[str] | None = None) -> dict[str, list[int]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to write (must not exist, or be empty)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head", type=int, default=60, help="training images of the head class (0)")
    ap.add_argument("--tail", type=int, default=3, help="training images of the tail class (9)")
    ap.add_argument("--val", type=int, default=10, help="validation images per class")
    ap.add_argument("--test", type=int, default=30, help="test images per class")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        ap.error(f"{out} is not empty; choose a new folder")
    if not 1 <= args.tail <= args.head or args.val < 0 or args.test < 0:
        ap.error("need 1 <= --tail <= --head and --val, --test >= 0")
    hands = [*installed_fonts(), STROKES]
    counts = {"train": long_tail(args.head, args.tail), "val": [args.val] * 10, "test": [args.test] * 10}
    counts = {s: c for s, c in counts.items() if sum(c)}
    n = write_folder(out, counts, hands, args.seed)
    names = ", ".join(Path(h).stem for h in hands)
    print(f"wrote {n} images to {out}: train {counts['train']} (head to tail), by {len(hands)} hands ({names})")
    print(f"next: hwr data info folder:{out}")
    return counts


if __name__ == "__main__":
    main()
