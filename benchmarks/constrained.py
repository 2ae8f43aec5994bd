r"""Reading formats: a strings run's string accuracy and CER on the same test strings, decoded greedily, by the free
prefix beam search, and by the beam search a reading format constrains (``hwr predict --length`` / ``--pattern``,
``hwr.decode.constrained_beam_search``).

- default: the run's own fixed test strings (those ``hwr evaluate`` scores) of ``--length`` characters, digits
  only, decoded free, under ``--length N`` (``.{N}``: N characters of the run's alphabet) and under ``\d{N}``;
- ``--format T`` (e.g. ``ddddd-dddd``): fixed strings of that template composed from the MNIST test digits
  (``hwr.data.strings.StringSpec.formats``; the run must read the template's separators), decoded free and
  under ``--pattern`` (default: the template as a pattern, ``\d{5}-\d{4}``).

    python benchmarks/constrained.py --run runs/bench-strings --length 5
    python benchmarks/constrained.py --run runs/bench-forms --format ddddd-dddd
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch

from benchmarks import harness
from benchmarks.strings_baseline import score
from hwr import decode, pattern
from hwr.cli import environment
from hwr.data import sources
from hwr.data import strings as ds
from hwr.engine import runtime
from hwr.tasks import strings as sr
from hwr.tasks.strings.step import frame_counts, normalise

__all__ = ["decoders", "logits_of", "main", "test_strings"]


def test_strings(run: str, config: sr.StringsConfig, args: argparse.Namespace, device: torch.device) -> ds.Strings:
    """The strings to read: the run's fixed test set cut to ``args.length`` digits, or ``args.format`` strings."""
    d = sources.load(config.dataset, environment.data_at(args.data_root), device=device)
    pool = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)["test"]
    if args.format:
        try:
            spec = dataclasses.replace(config.data, formats=(args.format,))
        except ValueError as e:
            raise SystemExit(f"--format {args.format}: {e} (the run {run} reads {config.data.alphabet})") from None
        return ds.fixed_set(pool, args.n or 1000, spec)
    test = ds.fixed_set(pool, args.n or config.test_strings, config.data)
    keep = (test.lengths == args.length) & ((test.targets < len(ds.DIGITS)) | (test.targets == ds.PAD)).all(1)
    return ds.Strings(*(t[keep] for t in test))


def logits_of(
    model: Any, params: Any, state: Any, meta: dict[str, Any], strings: ds.Strings, batch: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame scores ``(N, T, C)`` of the rendered strings and the frames ``(N,)`` that hold each one."""
    out, frames = [], []
    with torch.inference_mode():
        for i in range(0, len(strings.lengths), batch):
            x = normalise(strings.images[i : i + batch], meta["mean"], meta["std"])
            logits, _ = model.apply(params, state, x, train=False)
            out.append(logits.float().cpu())
            frames.append(frame_counts(model.config, strings.widths[i : i + batch], logits.shape[1]).cpu())
    return torch.cat(out), torch.cat(frames)


def decoders(alphabet: str, args: argparse.Namespace, blank: int) -> dict[str, Callable[..., decode.Decoded]]:
    """The decoders compared, by the name the table shows."""
    free = {
        "greedy": lambda x, n: decode.greedy(x, n, blank=blank),
        f"beam {args.beam}": lambda x, n: decode.beam_search(x, n, blank=blank, beam=args.beam),
    }
    if args.format:
        template = args.format.replace(".", r"\.")
        text = args.pattern or re.sub(r"d+", lambda m: rf"\d{{{len(m.group())}}}", template)
        forms = {f"--pattern '{text}'": text}
    else:
        n = args.length
        forms = {f"--length {n}": pattern.lengths_pattern([n]), rf"--pattern '\d{{{n}}}'": rf"\d{{{n}}}"}
    for name, text in forms.items():
        fsa = pattern.automaton(text, alphabet)
        free[f"{name} (beam {args.beam})"] = lambda x, n, fsa=fsa: decode.constrained_beam_search(
            x, n, blank=blank, automaton=fsa, beam=args.beam
        )
    return free


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/strings", help="strings run folder (hwr train --recipe strings)")
    ap.add_argument("--length", type=int, default=5, help="read the run's test strings of this many digits")
    ap.add_argument("--format", default=None, help="instead: strings of this template (ddddd-dddd, d,ddd.dd)")
    ap.add_argument("--pattern", default=None, help="--format: the pattern (default: the template's own)")
    ap.add_argument("--n", type=int, default=0, help="test strings rendered (default: the run's; 1000 for --format)")
    ap.add_argument("--beam", type=int, default=16, help="beam width of the beam searches")
    ap.add_argument("--data-root", default=str(environment.read().data.root))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    environment.start()
    device = runtime.resolve_device(args.device)
    config = sr.read_config(args.run)
    model, params, state, meta = sr.load_run(args.run, device)
    alphabet = sr.alphabet_of(meta, args.run)
    test = test_strings(args.run, config, args, device)
    t0 = time.perf_counter()
    logits, frames = logits_of(model, params, state, meta, test)
    forward = time.perf_counter() - t0
    rows: dict[str, dict[str, Any]] = {}
    for name, read in decoders(alphabet, args, model.config.blank).items():
        t0 = time.perf_counter()
        dec = read(logits, frames)
        seconds = time.perf_counter() - t0
        rows[name] = {**score(decode.to_lists(dec.labels, dec.lengths), test), "seconds": seconds}
    what = args.format or f"{args.length}-digit"
    harness.print_table(
        f"{len(test.lengths):,} {what} test strings of the MNIST test digits, {args.run} (forward {forward:.1f} s)",
        ["decoding", "string accuracy", "CER", "decode s"],
        [
            [k, f"{100 * r['string_accuracy']:.2f}%", f"{100 * r['cer']:.2f}%", f"{r['seconds']:.1f}"]
            for k, r in rows.items()
        ],
        left=("decoding",),
    )
    result = {"run": args.run, "strings": what, "n": len(test.lengths), "rows": rows}
    if args.json:
        harness.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
