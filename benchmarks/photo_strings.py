"""Handwritten digit strings photographed in the conditions of ``benchmarks/photo_conditions.py``: the same paper,
lines, shadows, glare, desk, sticky note, pencil, inks, scan, thumb and EXIF rotation, applied to a string of 3-7
digits written in one hand along a line. Measures CER and exact strings per condition of ``hwr predict``'s path for
a strings run (``load_image(string=True)`` -> ``normalise_string`` -> greedy reading); a refused file counts as
wholly wrong.

    python benchmarks/photo_strings.py --model runs/strings [--n 20] [--seed 7] [--only WORD ...] [--keep DIR]
        [--json PATH]

String ``k`` of every condition carries the same glyphs (digits of ``photo_conditions.glyph``, the hands of
``benchmarks/fonts.py`` and ``benchmarks/digit_folder.py``, scaled to one height within 10%, feet on one line,
gaps of 5-35% of that height) as the clean control's string ``k``, so a condition differs from the control only
by what it adds. Left out: the single-digit conditions (circled, underlined, a neighbouring digit in the crop) and
the two whose canvas is fixed for one digit (out of focus at 1000 px, tiny in 1600x1200).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np

from benchmarks import photo_conditions as pc
from benchmarks.strings_fonts import _summary
from hwr.config import from_dict
from hwr.data import digits
from hwr.data import strings as ds
from hwr.errors import InputError
from hwr.tasks import strings as sr

__all__ = ["CONDITIONS", "main", "render", "string_glyph"]

SINGLE_DIGIT_ONLY = ("circled by hand", "underlined by hand", "neighbour digit in crop")
FIXED_CANVAS = ("out of focus (sigma 2-4 @1000px)", "tiny digit in 1600x1200")
CONDITIONS = {k: v for k, v in pc.CONDITIONS.items() if k not in SINGLE_DIGIT_ONLY + FIXED_CANVAS}


def string_glyph(k: int, seed: int) -> tuple[str, np.ndarray]:
    """String ``k``: (its digits, tight ink mask in ``[0, 1]``): 3-7 glyphs of ``photo_conditions.glyph`` drawn by
    one hand, each scaled to the first one's height within 10%, their feet on one line, gaps of 5-35% of it."""
    rng = np.random.default_rng([seed, 99, k])
    parts, text, height = [], "", 0
    for _ in range(int(rng.integers(3, 8))):
        digit, _, g = pc.glyph(int(rng.integers(0, 10_000)), seed)
        height = height or g.shape[0]
        parts.append(pc._scaled(g, height * rng.uniform(0.9, 1.1) / g.shape[0]))
        text += str(digit)
    gaps = [0] + [int(rng.uniform(0.05, 0.35) * height) for _ in parts[1:]]
    h = max(p.shape[0] for p in parts)
    a = np.zeros((h, sum(p.shape[1] for p in parts) + sum(gaps)), np.float32)
    x = 0
    for p, gap in zip(parts, gaps):
        x += gap
        a[h - p.shape[0] :, x : x + p.shape[1]] = np.maximum(a[h - p.shape[0] :, x : x + p.shape[1]], p)
        x += p.shape[1]
    return text, a


def render(folder: Path, n: int, seed: int, only: list[str] | None = None) -> list[tuple[str, Path, str]]:
    """``n`` files per condition as ``folder/cNN/kkk_digits.(png|jpg)``: ``(condition, path, digits)`` each; with
    ``only``, the conditions whose names hold one of those words."""
    out = []
    for c, (name, make) in enumerate(CONDITIONS.items()):
        if only and not any(word in name for word in only):
            continue
        for k in range(n):
            text, g = string_glyph(k, seed)
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), k])  # the same files if conditions are added
            im, kw = make(g, rng, k)
            path = folder / f"c{c:02d}" / f"{k:03d}_{text}.{'jpg' if 'quality' in kw else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path, **kw)
            out.append((name, path, text))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Render the files, read them as ``hwr predict`` reads a string, print and return CER, exact strings and the
    misread strings ``(k, truth, reading)`` per condition."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/strings", help="strings run folder (hwr train --recipe strings)")
    ap.add_argument("--n", type=int, default=20, help="files per condition")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", default=None, help="write the images here instead of a temporary folder")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--only", nargs="+", default=None, help="the conditions whose names hold one of these words")
    args = ap.parse_args(argv)
    if not (Path(args.model) / "checkpoint.safetensors").exists():
        raise SystemExit(
            f"--model {args.model}: no strings run there; train one: hwr train --recipe strings --out {args.model}"
        )
    model, params, state, meta = sr.load_run(args.model)
    spec = from_dict(ds.StringSpec, meta["data"])
    pairs: dict[str, list[tuple[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, text in render(Path(args.keep or tmp), args.n, args.seed, args.only):
            pairs.setdefault(name, [])
            try:
                image = sr.normalise_string(digits.load_image(path, string=True), spec)
            except InputError:
                pairs[name].append(("", text))
                continue
            ((labels, _),) = sr.predict(
                model, params, state, [image], mean=meta["mean"], std=meta["std"], width=spec.width
            )
            pairs[name].append(("".join(map(str, labels)), text))
    rows = {
        name: {**_summary(ps), "misread": [(k, t, g) for k, (g, t) in enumerate(ps) if g != t]}
        for name, ps in pairs.items()
    }
    print(f"model {args.model}; {args.n} strings per condition, seed {args.seed}")
    print(f"{'condition':<40} {'CER':>6} {'exact':>6}")
    for name, r in rows.items():
        print(f"{name:<40} {100 * r['cer']:5.1f}% {100 * r['exact']:5.1f}%")
    result = {"model": args.model, "n": args.n, "seed": args.seed, "conditions": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
