"""A strings model on real image files it never saw the like of: digit strings written in handwriting-style fonts
from Debian packages, rendered to PNG and JPEG files of many sizes, colours and polarities, then read by the same
path as ``hwr predict`` (``hwr.data.digits.load_image`` -> ``hwr.tasks.strings.training.normalise_string`` -> ``predict``).

    apt-get install fonts-dkg-handwriting fonts-humor-sans fonts-breip fonts-rufscript fonts-comic-neue \\
        fonts-femkeklaver        (the fonts: benchmarks/fonts.py)
    python benchmarks/strings_fonts.py --model runs/strings [--n 60] [--seed 1] [--beam 8] [--keep DIR] [--ruled]

Prints CER and exact strings over all files and per font. The files vary: 3-8 digits, font size 28-150 px,
padding 5-60 px, a tilt of up to 3 degrees, dark on white, light on black, blue on yellow, grey on grey, noise,
every fifth file saved as grey, every third as JPEG. ``--ruled``: each string written on a rule as dark as the
ink, through the digits' feet. Every file is read both as ``hwr predict`` reads a string and as one glyph (the
digit rules: a rule under the string kept, digits with room between them dropped).
``render`` is what ``tests/cli/test_strings.py`` feeds the CLI.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from benchmarks.fonts import OUTLINE_FONTS, installed_fonts
from benchmarks.strings_baseline import score
from hwr.config import from_dict
from hwr.data import digits
from hwr.data import strings as ds
from hwr.tasks import strings as sr

__all__ = ["main", "render"]

COLOURS = [  # (ink, ground) RGB
    ([10, 10, 10], [255, 255, 255]),
    ([255, 255, 255], [0, 0, 0]),
    ([20, 40, 160], [240, 220, 120]),
    ([60, 60, 60], [170, 170, 170]),
]


def render(
    folder: Path, fonts: list[str], n: int = 30, seed: int = 0, ruled: bool = False
) -> list[tuple[Path, str, str]]:
    """``n`` image files of digit strings under ``folder``: ``(path, text, font)`` each, fonts in turn. ``ruled``:
    each string written on a rule, a line across the whole image through the digits' feet (lined paper, a
    form's line), as thick as a stroke."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(3, 9))))
        size = int(rng.integers(28, 150))
        font = ImageFont.truetype(fonts[k % len(fonts)], size)
        x0, y0, x1, y1 = font.getbbox(text)
        pad = int(rng.integers(5, 60))
        mask = Image.new("L", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), 0)
        draw = ImageDraw.Draw(mask)
        draw.text((pad - x0, pad - y0), text, font=font, fill=255)
        if ruled:  # through the digits' feet: most of them touch it, a few cross it
            feet, thick = pad + (y1 - y0) - max(1, size // 40), max(1, size // 14)
            draw.rectangle((0, feet, mask.width, feet + thick - 1), fill=255)
        mask = mask.rotate(float(rng.uniform(-3, 3)), resample=Image.BICUBIC, expand=True)
        a = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
        ink, ground = COLOURS[k % len(COLOURS)]
        rgb = np.asarray(ground, np.float32) * (1 - a) + np.asarray(ink, np.float32) * a
        rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
        path = folder / f"s{k:02d}_{text}.{'jpg' if k % 3 == 1 else 'png'}"
        img = Image.fromarray(rgb)
        (img.convert("L") if k % 5 == 0 else img).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        out.append((path, text, Path(fonts[k % len(fonts)]).stem))
    return out


def _cer(pairs: list[tuple[str, str]]) -> float:
    """CER of ``(reading, truth)`` pairs (``benchmarks.strings_baseline.score``)."""
    width = max(max(len(t) for _, t in pairs), 1)
    targets = torch.tensor([[int(c) for c in t] + [-1] * (width - len(t)) for _, t in pairs])
    lengths = torch.tensor([len(t) for _, t in pairs])
    test = ds.Strings(torch.zeros(len(pairs), 1, 1, 1, dtype=torch.uint8), targets, lengths, lengths, targets)
    return score([[int(c) for c in g] for g, _ in pairs], test)["cer"]


def _summary(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Files, CER and the share read exactly, of ``(reading, truth)`` pairs."""
    return {"files": len(pairs), "cer": _cer(pairs), "exact": sum(g == t for g, t in pairs) / len(pairs)}


def _read(files: list[tuple[Path, str, str]], run: tuple, spec: ds.StringSpec, beam: int, string: bool) -> list[str]:
    """The readings of ``files`` by the strings run ``run`` (``sr.load_run``), each file read by ``hwr predict``'s
    path (``string=True``) or as one glyph (``string=False``: the digit rule for lines, as before strings were read
    as strings)."""
    model, params, state, meta = run
    images = [sr.normalise_string(digits.load_image(p, string=string), spec) for p, _, _ in files]
    read = sr.predict(model, params, state, images, mean=meta["mean"], std=meta["std"], width=spec.width, beam=beam)
    return ["".join(map(str, lab)) for lab, _ in read]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/strings", help="strings run folder")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--beam", type=int, default=0)
    ap.add_argument("--keep", default=None, help="write the images here instead of a temporary folder")
    ap.add_argument("--ruled", action="store_true", help="each string written on a rule across the image")
    args = ap.parse_args(argv)
    fonts = installed_fonts(outline=True)
    if not fonts:
        raise SystemExit("no handwriting-style font installed; see this script's docstring for the packages")
    run = sr.load_run(args.model)
    spec = from_dict(ds.StringSpec, run[3]["data"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files = render(folder, fonts, args.n, args.seed, ruled=args.ruled)
        pairs = _read(files, run, spec, args.beam, string=True)
        glyph = _read(files, run, spec, args.beam, string=False)
    truth = [t for _, t, _ in files]
    by_font: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for got, (_, text, font) in zip(pairs, files):
        by_font[font].append((got, text))
    outline = {Path(f).stem for f in OUTLINE_FONTS}
    rows = {font: _summary(ps) for font, ps in by_font.items()}
    stroke = [p for font, ps in by_font.items() if font not in outline for p in ps]
    totals = {"single-stroke fonts": _summary(stroke)} if stroke else {}
    # what reading a file as a string buys (a rule under it, room between its digits): both ways, every file
    totals["all, read as strings"] = _summary(list(zip(pairs, truth)))
    totals["all, read as one glyph"] = _summary(list(zip(glyph, truth)))
    for font, r in [*rows.items(), *totals.items()]:
        tag = " (outline)" if font in outline else ""
        print(f"{font + tag:<22} {r['files']:>4} files  CER {100 * r['cer']:6.2f}%  exact {100 * r['exact']:6.1f}%")
    wrong = [(t, g) for g, t in stroke if g != t]
    print(
        "misread, single-stroke fonts (truth -> reading):",
        ", ".join(f"{t} -> {g or '(empty)'}" for t, g in wrong) or "none",
    )
    return {"fonts": rows, **totals, "misread": wrong}


if __name__ == "__main__":
    main()
