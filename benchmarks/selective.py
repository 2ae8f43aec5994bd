"""Calibration and rejection checked on real files: a digit run's temperature and reject thresholds, fitted on its
validation split, applied to MNIST test and to image files of digits it never saw the like of; and the string
confidences of a strings run compared (which ranks its errors best) and its thresholds applied to font-rendered
string files.

    apt-get install fonts-dkg-handwriting fonts-humor-sans fonts-breip fonts-rufscript fonts-comic-neue \\
        fonts-femkeklaver        (the fonts: benchmarks/fonts.py)
    python benchmarks/selective.py [--digits runs/bench-fast] [--strings runs/bench-strings] \\
        [--targets 0.01 0.005] [--n-digits 280] [--n-strings 60] [--seed 1] [--json OUT]

``--digits``: a digit run (trained with ``hwr train --recipe fast --out DIR`` into the folder when it does not
exist, about 1-2 minutes on 2 cores); its ``calibration.json`` is fitted when missing and the thresholds of
``--targets`` are chosen on its validation split (``hwr.tasks.digits.calibrate.with_thresholds``). The digit files
are made as ``benchmarks/strings_fonts.py`` makes strings (one digit each: fonts in turn, 28-150 px, padding,
tilt, four ink/ground colours, noise, grey and JPEG files) and read by ``hwr predict``'s path (``load_image`` ->
``mnist_style``); the stroke hand of ``benchmarks/digit_folder.py`` and the outline font (half as many files
each) are rows of their own.
``--strings`` (optional): a strings run; every confidence of ``hwr.tasks.strings.confidence.KINDS`` is measured
on its validation strings (AURC, the excess over a perfect ranking, ECE) and on the font-rendered string files.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.table import Table

from benchmarks import strings_fonts
from benchmarks.digit_folder import _drawn
from benchmarks.fonts import OUTLINE_FONTS, installed_fonts
from hwr import calibration, recipes, runs
from hwr.calibration import COVERAGES
from hwr.config import DataSettings, from_dict
from hwr.data import digits, sources
from hwr.data import strings as ds
from hwr.engine.execution import Execution
from hwr.errors import InputError
from hwr.tasks import digits as dt
from hwr.tasks import strings as sr
from hwr.tasks.digits import calibrate as dc
from hwr.tasks.strings import confidence as sc
from hwr.tasks.strings.step import frame_counts, normalise

__all__ = ["main", "render_digits", "selective_figures"]

console = Console(width=200)


def render_digits(folder: Path, hands: list[str], n: int, seed: int = 0) -> list[tuple[Path, int, str]]:
    """``n`` image files of single digits under ``folder``, ``(path, digit, hand)`` each: digit ``k % 10``, the
    ``hands`` (font files, or ``strokes`` for the drawn hand) in turn, drawn as ``strings_fonts.render`` draws."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        digit, hand = k % 10, hands[(k // 10) % len(hands)]
        size = int(rng.integers(28, 150))
        pad = int(rng.integers(5, 60))
        if hand == "strokes":
            glyph = _drawn(digit, rng, size)
            mask = Image.new("L", (glyph.width + 2 * pad, glyph.height + 2 * pad), 0)
            mask.paste(glyph, (pad, pad))
        else:
            font = ImageFont.truetype(hand, size)
            x0, y0, x1, y1 = font.getbbox(str(digit))
            mask = Image.new("L", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), 0)
            ImageDraw.Draw(mask).text((pad - x0, pad - y0), str(digit), font=font, fill=255)
        mask = mask.rotate(float(rng.uniform(-3, 3)), resample=Image.BICUBIC, expand=True)
        a = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
        ink, ground = strings_fonts.COLOURS[k % len(strings_fonts.COLOURS)]
        rgb = np.asarray(ground, np.float32) * (1 - a) + np.asarray(ink, np.float32) * a
        rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
        path = folder / f"d{k:03d}_{digit}.{'jpg' if k % 3 == 1 else 'png'}"
        img = Image.fromarray(rgb)
        (img.convert("L") if k % 5 == 0 else img).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        out.append((path, digit, Path(hand).stem))
    return out


def selective_figures(
    conf_raw: torch.Tensor, conf: torch.Tensor, correct: torch.Tensor, thresholds: dict[float, float]
) -> dict[str, Any]:
    """ECE before / after, the risk-coverage figures and what each threshold keeps, of one set of readings."""
    rc = calibration.risk_coverage(conf, correct)
    out = {
        "n": len(correct),
        "accuracy": float(correct.double().mean()),
        "ece_before": calibration.expected_calibration_error(conf_raw, correct),
        "ece_after": calibration.expected_calibration_error(conf, correct),
        "aurc": rc.aurc,
        "aurc_before": calibration.risk_coverage(conf_raw, correct).aurc,
        "oracle_aurc": rc.oracle_aurc,
        "error_at": {f"{c:g}": rc.at[c] for c in COVERAGES},
    }
    for target, p in thresholds.items():
        kept = calibration.accept(conf, p)
        k = int(kept.sum())
        out[f"target {target:g}"] = {
            "threshold": p,
            "coverage": k / len(correct),
            "error": float((~correct[kept]).double().mean()) if k else 0.0,
        }
    return out


# ---------------------------------------------------------------------------------------------- digits


def _digit_run(path: Path, data: DataSettings) -> Path:
    if not (path / runs.METRICS).is_file():
        console.print(f"training the fast recipe into {path} (hwr train --recipe fast --out {path})")
        dt.run(recipes.get("fast"), path, execution=Execution(), data=data)
    return path


def _digit_files(model: Any, params: Any, state: Any, meta: dict, files: list) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([digits.mnist_style(digits.load_image(p)) for p, _, _ in files])
    logits = dc.logits_of(model, params, state, x, mean=meta["mean"], std=meta["std"])
    return logits, torch.tensor([d for _, d, _ in files])


def digits_check(args: argparse.Namespace, data: DataSettings) -> dict[str, Any]:
    """The digit run's calibration on MNIST test and on the digit files, at the thresholds of ``args.targets``."""
    run = _digit_run(Path(args.digits), data)
    c = dc.with_thresholds(run, args.targets, data=data)
    thresholds = {t: c.threshold(t) for t in args.targets}
    model, params, state, meta = dt.load_run(run)
    test = sources.load(dt.read_config(run).dataset, data)
    sets = {"MNIST test": (dc.logits_of(model, params, state, test.test_images, mean=meta["mean"], std=meta["std"]),
                           test.test_labels)}  # fmt: skip
    hands = {"fonts": installed_fonts(), "strokes": ["strokes"], "outline": installed_fonts(outline=True)}
    hands["outline"] = [f for f in hands["outline"] if f in OUTLINE_FONTS]
    with tempfile.TemporaryDirectory() as tmp:
        for name, hs in hands.items():
            if hs:
                n = args.n_digits if name == "fonts" else max(args.n_digits // 2, 10)
                (Path(tmp) / name).mkdir()
                files = render_digits(Path(tmp) / name, hs, n, args.seed)
                sets[f"{name} files"] = _digit_files(model, params, state, meta, files)
    out = {"run": str(run), "temperature": c.temperature, "validation": {**c.figures, "n": c.n}, "sets": {}}
    out["thresholds_on_val"] = {f"{t:g}": dict(c.thresholds[t]) for t in args.targets}
    for name, (logits, labels) in sets.items():
        pred, raw = dc.confidence(logits)
        _, conf = dc.confidence(logits, c.temperature)
        out["sets"][name] = selective_figures(raw, conf, pred == labels, thresholds)
        out["sets"][name]["nll_before"] = calibration.nll(logits, labels)
        out["sets"][name]["nll_after"] = calibration.nll(logits, labels, c.temperature)
    return out


# ---------------------------------------------------------------------------------------------- strings


def _string_logits(
    model: Any, params: Any, state: Any, images: list[torch.Tensor], meta: dict, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame scores of real string images as ``hwr.tasks.strings.predict`` computes them (padded to the
    training width at least, the frames past each one's content masked)."""
    c = model.config
    widths = torch.tensor([int(im.shape[-1]) for im in images])
    w = -(-max(int(widths.max()), width, c.stride) // c.stride) * c.stride
    x = torch.stack([F.pad(im, (0, w - im.shape[-1])) for im in images])
    with torch.inference_mode():
        logits, _ = model.apply(params, state, normalise(x, meta["mean"], meta["std"]), train=False)
    return logits, frame_counts(c, widths, logits.shape[1])


def _exact_texts(dec: Any, texts: list[str]) -> torch.Tensor:
    from hwr.decode import to_lists

    return torch.tensor(["".join(map(str, r)) == t for r, t in zip(to_lists(dec.labels, dec.lengths), texts)])


def strings_check(args: argparse.Namespace, data: DataSettings) -> dict[str, Any]:
    """Every string confidence on the validation strings, the test strings and the font-rendered files; the
    thresholds of ``args.targets`` chosen on validation with each."""
    model, params, state, meta = sr.load_run(args.strings)
    config = sr.read_config(args.strings)
    spec = from_dict(ds.StringSpec, meta["data"])
    val = sr.training.validation_set(config, data)
    d = sources.load(config.dataset, data)
    test = ds.fixed_set(ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)["test"], 2000, spec)
    with tempfile.TemporaryDirectory() as tmp:
        files = strings_fonts.render(Path(tmp), installed_fonts(), args.n_strings, args.seed)
        images = [sr.normalise_string(digits.load_image(p, string=True), spec) for p, _, _ in files]
    logits, frames = _string_logits(model, params, state, images, meta, spec.width)
    out: dict[str, Any] = {"run": str(args.strings), "kinds": {}}
    for kind in sc.KINDS:
        v_conf, v_ok = sc.scored(model, params, state, val, mean=meta["mean"], std=meta["std"], kind=kind)
        t_conf, t_ok = sc.scored(model, params, state, test, mean=meta["mean"], std=meta["std"], kind=kind)
        dec, f_conf = sc.string_confidence(logits, frames, blank=model.config.blank, kind=kind)
        f_ok = _exact_texts(dec, [t for _, t, _ in files])
        thresholds = {}
        for t in args.targets:
            try:
                thresholds[t] = calibration.threshold_for_error(v_conf, v_ok, t).threshold
            except InputError:  # out of reach on validation: reported as such
                thresholds[t] = float("inf")
        out["kinds"][kind] = {
            "val": selective_figures(v_conf, v_conf, v_ok, thresholds),
            "test": selective_figures(t_conf, t_conf, t_ok, thresholds),
            "font files": selective_figures(f_conf, f_conf, f_ok, thresholds),
        }
    return out


# ---------------------------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def print_digits(r: dict[str, Any], targets: list[float]) -> None:
    v = r["validation"]
    console.print(
        f"{r['run']}: temperature {r['temperature']:.4f} fitted on {v['n']:,} validation images (NLL "
        f"{v['nll_before']:.4f} -> {v['nll_after']:.4f}, ECE {_pct(v['ece_before'])} -> {_pct(v['ece_after'])})"
    )
    table = Table(title="digits: calibration and rejection (thresholds chosen on validation)")
    cols = ["set", "n", "accuracy", "ECE before", "ECE after", "NLL before", "NLL after", "AURC"]
    cols += [f"err@{100 * c:g}%" for c in COVERAGES]
    cols += [f"{lab} @ target {100 * t:g}%" for t in targets for lab in ("coverage", "error")]
    for col in cols:
        table.add_column(col, justify="left" if col == "set" else "right")
    for name, s in r["sets"].items():
        table.add_row(
            name, str(s["n"]), _pct(s["accuracy"]), _pct(s["ece_before"]), _pct(s["ece_after"]),
            f"{s['nll_before']:.4f}", f"{s['nll_after']:.4f}", f"{s['aurc']:.4f}",
            *[_pct(s["error_at"][f"{c:g}"]) for c in COVERAGES],
            *[_pct(s[f"target {t:g}"][k]) for t in targets for k in ("coverage", "error")],
        )  # fmt: skip
    console.print(table)
    for t in targets:
        th = r["thresholds_on_val"][f"{t:g}"]
        console.print(
            f"target {100 * t:g}%: reject below P = {th['threshold']:.4f} (validation: coverage "
            f"{_pct(th['coverage'])}, error {_pct(th['error'])})"
        )


def print_strings(r: dict[str, Any], targets: list[float]) -> None:
    table = Table(title=f"strings {r['run']}: which confidence ranks the errors best (AURC: lower is better)")
    cols = ["confidence", "set", "n", "exact", "ECE", "AURC", "perfect", "err@90%", "err@80%"]
    cols += [f"{lab} @ target {100 * t:g}%" for t in targets for lab in ("coverage", "error")]
    for col in cols:
        table.add_column(col, justify="left" if col in ("confidence", "set") else "right")
    for kind, sets in r["kinds"].items():
        for name, s in sets.items():
            table.add_row(
                kind, name, str(s["n"]), _pct(s["accuracy"]), _pct(s["ece_after"]), f"{s['aurc']:.4f}",
                f"{s['oracle_aurc']:.4f}", _pct(s["error_at"]["0.9"]), _pct(s["error_at"]["0.8"]),
                *[_pct(s[f"target {t:g}"][k]) for t in targets for k in ("coverage", "error")],
            )  # fmt: skip
        table.add_section()
    console.print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", default="runs/bench-fast", help="digit run folder (trained there when missing)")
    ap.add_argument("--strings", default=None, help="strings run folder (omit: digits only)")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.01, 0.005], help="target errors")
    ap.add_argument("--n-digits", type=int, default=280, help="digit files in the handwriting fonts")
    ap.add_argument("--n-strings", type=int, default=60, help="string files in the handwriting fonts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-root", default=str(DataSettings().root))
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if not installed_fonts():
        raise SystemExit("no handwriting-style font installed; see this script's docstring for the packages")
    data = DataSettings(Path(args.data_root))
    result: dict[str, Any] = {"digits": digits_check(args, data)}
    print_digits(result["digits"], args.targets)
    if args.strings:
        result["strings"] = strings_check(args, data)
        print_strings(result["strings"], args.targets)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
