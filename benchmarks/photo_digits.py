"""Single digits photographed, not scanned: handwriting-font digits (``benchmarks/fonts.py``) and the stroke hand of
``benchmarks/digit_folder.py`` made photo-like (tinted paper and pen-coloured ink, uneven light and vignetting,
sensor noise of sigma 4-20 grey levels, JPEG at several qualities, a pen line crossing near the digit, a printed
form box round it), written as real PNG/JPEG files and read by ``hwr predict``'s path (``load_image`` ->
``mnist_style``) and by the path before issue 22 (``legacy_load_image``, kept here only), side by side.

    apt-get install fonts-dkg-handwriting fonts-humor-sans fonts-breip fonts-rufscript fonts-comic-neue
    python benchmarks/photo_digits.py --model RUN_DIR [--n 100] [--seed 0] [--keep DIR] [--mnist N]

Without ``--model`` it trains the ``fast`` recipe on MNIST into ``runs/photo-digits-fast`` (once) and uses that.
Prints accuracy per condition, old path and new. Offline once MNIST is cached.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from benchmarks.digit_folder import STROKES, _drawn, _typed
from benchmarks.fonts import installed_fonts
from hwr.data import augment as aug
from hwr.data import digits
from hwr.errors import InputError

__all__ = ["CONDITIONS", "legacy_load_image", "main", "photo"]

PAPERS = [[236, 228, 205], [250, 240, 170], [215, 230, 245], [240, 215, 215], [225, 225, 225]]  # RGB grounds
INKS = [[30, 40, 120], [25, 25, 30], [60, 30, 30], [20, 70, 40], [80, 80, 90]]  # ballpoint blue, black, ...


class Look(NamedTuple):
    """How one condition's photos are made."""

    tinted: bool = False  # coloured paper and pen-coloured ink (else black on white)
    light: bool = False  # a gradient across the page and a darker rim
    sigma: float = 0.0  # sensor noise, grey levels
    quality: int = 0  # JPEG quality (0: PNG)
    pen: bool = False  # a pen line across the page near the digit
    box: bool = False  # a printed form box round it
    bold: bool = False  # a felt marker (strokes a fifth of the glyph wide), cropped tight
    desk: bool = False  # the sheet photographed on a dark desk
    turn: float = 0.0  # ... turned about this many degrees (either way, +-1.5)
    chalk: bool = False  # light strokes on a dark board (with ``bold``: a bold chalk digit cropped tight)
    rule: bool = False  # the digit written on a dark rule across the page (through its lower part)
    dim: float = 1.0  # exposure: the whole photo scaled by this (0.35: underexposed, the paper at a third of white)
    tight: bool = False  # cropped to the ink's box, no margin (a detector's or a labelling tool's crop)


CONDITIONS: dict[str, Look] = {
    "clean png": Look(),
    "clean jpeg q90": Look(quality=90),
    "tinted paper": Look(tinted=True),
    "tinted + noise 4": Look(tinted=True, sigma=4),
    "tinted + noise 10": Look(tinted=True, sigma=10),
    "tinted + noise 20": Look(tinted=True, sigma=20),
    "uneven light + noise 6": Look(tinted=True, light=True, sigma=6),
    "noise 10 + jpeg q90": Look(tinted=True, sigma=10, quality=90),
    "noise 10 + jpeg q60": Look(tinted=True, sigma=10, quality=60),
    "noise 15 + jpeg q30": Look(tinted=True, sigma=15, quality=30),
    "pen line near": Look(tinted=True, sigma=6, quality=80, pen=True),
    "form box": Look(tinted=True, sigma=6, quality=80, box=True),
    "bold marker, tight crop": Look(bold=True),
    "bold, tight, uneven light": Look(tinted=True, light=True, sigma=6, quality=80, bold=True),
    "sheet on a dark desk": Look(tinted=True, sigma=4, quality=85, desk=True),
    "sheet on a desk, turned 6-9 deg": Look(tinted=True, light=True, sigma=4, quality=85, desk=True, turn=7.5),
    "bold chalk on a board, tight": Look(sigma=4, bold=True, chalk=True),
    "written on a dark rule": Look(tinted=True, sigma=4, quality=85, rule=True),
    "everything": Look(tinted=True, light=True, sigma=12, quality=70, pen=True, box=True),
    "underexposed + noise 4": Look(tinted=True, sigma=4, quality=85, dim=0.35),
    "cropped to the ink": Look(tight=True),
    "cropped to the ink + noise 6": Look(tinted=True, sigma=6, quality=80, tight=True),
}


def legacy_load_image(path: Path) -> torch.Tensor:
    """``hwr.data.digits.load_image`` as it was before issue 22: the ground from the border's median, the noise
    floor from its 90th percentile, every pixel above it ink."""
    img = digits._open(path)
    with img:
        grey = digits._grey(img)
    h, w = grey.shape
    b = max(1, round(0.02 * min(h, w)))
    border = np.concatenate([grey[:b].ravel(), grey[-b:].ravel(), grey[:, :b].ravel(), grey[:, -b:].ravel()])
    bg = float(np.median(border))
    clear = bg > 0.6 or bg < 0.4
    dark_ink = bg > 0.6 if clear else bg - float(grey.min()) >= float(grey.max()) - bg
    ink, border_ink = (bg - grey, bg - border) if dark_ink else (grey - bg, border - bg)
    ink = np.clip(ink, 0.0, None)
    floor = float(np.quantile(np.clip(border_ink, 0.0, None), 0.9))
    peak = float(ink.max())
    if peak - floor < digits.MIN_CONTRAST:
        raise InputError(f"{path}: no ink found")
    return torch.from_numpy(np.clip((ink - floor) / (peak - floor), 0.0, 1.0).astype(np.float32))


def _glyph_mask(digit: int, hand: str, rng: np.random.Generator) -> np.ndarray:
    """A tight ink mask in ``[0, 1]`` of ``digit`` by ``hand`` (a font file or ``STROKES``), tilted a little."""
    size = int(rng.integers(48, 160))
    mask = _drawn(digit, rng, size) if hand == STROKES else _typed(digit, hand, rng, size)
    mask = mask.rotate(float(rng.uniform(-8, 8)), resample=Image.BICUBIC, expand=True)
    a = np.asarray(mask, dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(a.max(1) > 0.05), np.flatnonzero(a.max(0) > 0.05)
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _disc(r: int) -> np.ndarray:
    """A disc footprint of radius ``r``."""
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx**2 + yy**2 <= r * r


def photo(glyph: np.ndarray, condition: str, rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """``glyph`` (an ink mask) on a canvas as ``CONDITIONS[condition]`` says; returns the RGB image and the glyph's
    box ``(top, left, bottom, right)`` on it."""
    tinted, light, sigma, _, pen, box, bold, desk, turn, chalk, rule, dim, tight = CONDITIONS[condition]
    if bold:  # a felt marker: strokes about a fifth of the glyph's size wide
        r = max(1, round(max(glyph.shape) * rng.uniform(0.05, 0.09)))
        glyph = np.pad(glyph, r)
        glyph = np.maximum(glyph, ndimage.grey_dilation(glyph, footprint=_disc(r)))
    gh, gw = glyph.shape
    side = max(gh, gw)
    margin = [int(rng.uniform(*((0.02, 0.1) if bold else (0.35, 0.8))) * side) for _ in range(4)]
    if tight:
        margin = [0, 0, 0, 0]
    H, W = gh + margin[0] + margin[2], gw + margin[1] + margin[3]
    ink = np.zeros((H, W), np.float32)
    top, left = margin[0], margin[1]
    ink[top : top + gh, left : left + gw] = glyph
    lines = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(lines)
    if box:  # a printed form box with a clear margin round the digit
        pad = int(rng.uniform(0.12, 0.25) * side)
        width = max(1, round(side * rng.uniform(0.015, 0.035)))
        draw.rectangle((left - pad, top - pad, left + gw + pad, top + gh + pad), outline=255, width=width)
    if pen:  # a stroke across the page passing above or below the digit
        y = (
            top - int(rng.uniform(0.1, 0.25) * side)
            if rng.random() < 0.5
            else top + gh + int(rng.uniform(0.1, 0.25) * side)
        )
        tilt = rng.uniform(-0.08, 0.08) * W
        draw.line((0, y - tilt, W, y + tilt), fill=255, width=max(2, round(side * rng.uniform(0.03, 0.06))))
    if rule:  # a line across the page through the digit's lower part, as dark as the ink, tilted a little
        y = top + int(rng.uniform(0.75, 0.98) * gh)
        tilt = rng.uniform(-0.02, 0.02) * W
        draw.line((0, y - tilt, W, y + tilt), fill=255, width=max(2, round(side * rng.uniform(0.02, 0.04))))
    printed_or_pen = np.asarray(lines, np.float32)[..., None] / 255.0
    a = ink[..., None]
    paper = np.array(PAPERS[int(rng.integers(len(PAPERS)))] if tinted else [255, 255, 255], np.float64)
    pen_ink = np.array(INKS[int(rng.integers(len(INKS)))] if tinted else [15, 15, 15], np.float64)
    if chalk:  # a green-black board, chalk-white strokes
        paper, pen_ink = np.array([45, 60, 50], np.float64), np.array([232, 232, 222], np.float64)
    printed = np.array([150, 60, 60] if rng.random() < 0.5 else [60, 60, 60], np.float64)  # form print: red or grey
    rgb = paper * (1 - a) + pen_ink * a
    line_ink = pen_ink if (pen or rule) and not box else printed
    rgb = rgb * (1 - printed_or_pen) + line_ink * printed_or_pen
    if light:  # a gradient across the page and a darker rim
        yy, xx = np.mgrid[0:H, 0:W]
        u, v = xx / W - 0.5, yy / H - 0.5
        g = rng.uniform(0.15, 0.35) * (u * rng.uniform(-1, 1) + v * rng.uniform(-1, 1))
        rgb = rgb * (1.0 + g - rng.uniform(0.2, 0.4) * (u**2 + v**2))[..., None]
    rgb = rgb * dim
    if desk:
        rgb, (dy, dx) = _on_desk(rgb, turn, rng)
        top, left = top + dy, left + dx
    if sigma:
        rgb = rgb + rng.normal(0, sigma, rgb.shape)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return img, (top, left, top + gh, left + gw)


def _on_desk(rgb: np.ndarray, turn: float, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """The sheet ``rgb`` on a dark desk, a sixth to a third of its size showing round it, turned about ``turn``
    degrees either way when ``turn``; returns the photo and where the sheet's corner went (before the turn)."""
    H, W = rgb.shape[:2]
    pad = [int(rng.uniform(0.08, 0.2) * max(H, W)) for _ in range(4)]
    wood = np.array([rng.uniform(50, 90), rng.uniform(35, 60), rng.uniform(25, 45)])
    table = np.zeros((H + pad[0] + pad[2], W + pad[1] + pad[3], 3)) + wood
    table[pad[0] : pad[0] + H, pad[1] : pad[1] + W] = rgb
    if turn:
        turned = Image.fromarray(np.clip(table, 0, 255).astype(np.uint8)).rotate(
            float(rng.choice([-1, 1]) * rng.uniform(turn - 1.5, turn + 1.5)),
            resample=Image.BICUBIC,
            fillcolor=tuple(int(c) for c in wood),
        )
        table = np.asarray(turned, np.float64)
    return table, (pad[0], pad[1])


def render(folder: Path, hands: list[str], n: int, seed: int) -> list[tuple[str, Path, int]]:
    """``n`` files per condition under ``folder``: ``(condition, path, digit)`` each, digits and hands in turn."""
    rng = np.random.default_rng(seed)
    out = []
    for c, (condition, spec) in enumerate(CONDITIONS.items()):
        for i in range(n):
            digit = i % 10
            img, _ = photo(_glyph_mask(digit, hands[(i // 10 + i) % len(hands)], rng), condition, rng)
            quality = spec.quality
            path = folder / f"c{c:02d}_{i:03d}_{digit}.{'jpg' if quality else 'png'}"
            img.save(path, **({"quality": quality} if quality else {}))
            out.append((condition, path, digit))
    return out


def _model(run_dir: str | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """A classifier of uint8 ``(N, 1, 28, 28)`` from a digit run folder (``hwr.tasks.digits.load_run``), or the
    ``fast`` recipe trained on MNIST into ``runs/photo-digits-fast`` when none is given."""
    from hwr import recipes
    from hwr.config import DataSettings
    from hwr.tasks import digits as task

    if run_dir is None:
        run_dir = str(ROOT / "runs" / "photo-digits-fast")
        data = DataSettings(root=os.environ.get("HWR_DATA")) if os.environ.get("HWR_DATA") else DataSettings()
        task.run(recipes.get("fast"), run_dir, data=data, write_figures=False)
    model, params, state, meta = task.load_run(run_dir, "cpu")
    transform = aug.make_transform(None, meta["mean"], meta["std"])

    def classify(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.apply(params, state, transform(None, x), train=False)[0].argmax(-1)

    return classify, run_dir


def _read(load: Callable[[Path], torch.Tensor], path: Path) -> torch.Tensor | None:
    """The 28x28 input of one file through ``load`` then ``mnist_style``; None when it is refused."""
    try:
        return digits.mnist_style(load(path))
    except InputError:
        return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="digit run folder (default: train the fast recipe once)")
    ap.add_argument("--n", type=int, default=100, help="files per condition")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="write the images here instead of a temporary folder")
    ap.add_argument("--mnist", type=int, default=0, help="also read this many MNIST test digits back from PNG files")
    args = ap.parse_args(argv)
    hands = [*installed_fonts(), STROKES]
    classify, run_dir = _model(args.model)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files = render(folder, hands, args.n, args.seed)
        for name, load in (("old", legacy_load_image), ("new", digits.load_image)):
            inputs = [_read(load, p) for _, p, _ in files]
            blank = torch.zeros(1, 28, 28, dtype=torch.uint8)
            pred = classify(torch.stack([x if x is not None else blank for x in inputs])).tolist()
            for (condition, _, digit), x, p in zip(files, inputs, pred):
                r = rows.setdefault(condition, {"old": 0.0, "new": 0.0, "files": 0.0})
                r[name] += float(x is not None and p == digit)
                r["files"] += 0.5
    print(f"model {run_dir}; {args.n} files per condition, hands: {', '.join(Path(h).stem for h in hands)}")
    print(f"{'condition':<26} {'old':>7} {'new':>7}")
    for condition, r in rows.items():
        print(f"{condition:<26} {100 * r['old'] / r['files']:6.1f}% {100 * r['new'] / r['files']:6.1f}%")
    photos = [r for c, r in rows.items() if not c.startswith("clean")]
    total = {k: sum(r[k] for r in photos) / sum(r["files"] for r in photos) for k in ("old", "new")}
    print(f"{'all photo-like':<26} {100 * total['old']:6.1f}% {100 * total['new']:6.1f}%")
    scans = _mnist_files(classify, args.mnist) if args.mnist else None
    return {"conditions": rows, "photos": total, "mnist_files": scans}


def _mnist_files(classify: Callable[[torch.Tensor], torch.Tensor], n: int) -> dict[str, float]:
    """MNIST's first ``n`` test digits written as 28x28 PNG files and read back by each path: a clean scan should
    come back as it was, bold and frame-filling digits included. Prints and returns the accuracy on the tensors
    and through the files."""
    from hwr.data import sources

    ds = sources.load("mnist")
    x, y = ds.test_images[:n], ds.test_labels[:n]
    acc = {"tensors": float((classify(x) == y).float().mean())}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, im in enumerate(x):
            paths.append(Path(tmp) / f"{i:05d}.png")
            Image.fromarray(im[0].numpy()).save(paths[-1])
        blank = torch.zeros(1, 28, 28, dtype=torch.uint8)
        for name, load in (("old", legacy_load_image), ("new", digits.load_image)):
            read = torch.stack([r if (r := _read(load, p)) is not None else blank for p in paths])
            acc[name] = float((classify(read) == y).float().mean())
    print(
        f"MNIST test digits 1-{n} as 28x28 PNG files: tensors {100 * acc['tensors']:.2f}%, "
        f"files old {100 * acc['old']:.2f}%, new {100 * acc['new']:.2f}%"
    )
    return acc


if __name__ == "__main__":
    main()
