"""Digit strings: the CTC model beside what a user would do without it, on the same held-out test strings.

Rows, each on the strings run's fixed test set (``hwr.data.strings.fixed_set`` of the MNIST test digits, lengths
balanced), with CER, string accuracy and string accuracy by length:

- ``crnn + CTC``: the strings run (``--strings``), greedy decoding, and with ``--beam K`` prefix beam search;
- ``segment + digit CNN``: the digit classifier of ``--digits`` (e.g. ``hwr train --recipe fast``) used as is on
  the connected components of each string (``hwr.tasks.strings.segment``): no training on strings at all.

    python benchmarks/strings_baseline.py --strings runs/strings --digits runs/fast [--n 8000] [--beam 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch

from benchmarks import harness
from hwr import metrics
from hwr.cli import environment
from hwr.data import augment, sources
from hwr.data import strings as ds
from hwr.decode import PAD
from hwr.engine import runtime
from hwr.tasks import digits as experiment
from hwr.tasks import strings as sr
from hwr.tasks.strings import segment

__all__ = ["main", "score", "segment_and_classify"]


def score(readings: list[list[int]], test: ds.Strings) -> dict[str, Any]:
    """``hwr.metrics.summarize_strings`` of ``readings`` against ``test``'s targets."""
    width = max([len(r) for r in readings] + [1])
    hyp = torch.tensor([r + [PAD] * (width - len(r)) for r in readings], dtype=torch.int64)
    lengths = torch.tensor([len(r) for r in readings])
    sums = metrics.string_sums(hyp, lengths, test.targets.cpu(), test.lengths.cpu(), test.targets.shape[1])
    return metrics.summarize_strings(sums)


def segment_and_classify(digit_run: str | Path, test: ds.Strings, device: torch.device) -> list[list[int]]:
    """Every test string read by ``hwr.tasks.strings.segment.read`` with the digit classifier of ``digit_run``."""
    model, params, state, meta = experiment.load_run(digit_run, device)
    if meta.get("model") == "crnn" or len(meta.get("classes", [])) != 10:
        raise SystemExit(f"--digits {digit_run}: needs a 10-class digit classifier run (hwr train --recipe fast)")
    transform = augment.make_transform(None, meta["mean"], meta["std"])

    def classify(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = [
                model.apply(params, state, transform(None, x[i : i + 1024].to(device)), train=False)[0]
                for i in range(0, len(x), 1024)
            ]
        return torch.cat(out).argmax(-1)

    images = [im[..., : int(w)] for im, w in zip(test.images.cpu(), test.widths.cpu())]
    return segment.read(classify, images)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the two runs to compare, the test strings and the decoding."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strings", default="runs/strings", help="strings run folder (hwr train --recipe strings)")
    ap.add_argument("--digits", default="runs/fast", help="digit classifier run folder (hwr train --recipe fast)")
    ap.add_argument("--n", type=int, default=0, help="test strings (default: the run's test_strings)")
    ap.add_argument("--beam", type=int, default=0, help="also decode by prefix beam search of this width")
    ap.add_argument("--data-root", default=str(environment.read().data.root))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    return ap.parse_args(argv)


def _beam_readings(
    model: Any, params: Any, state: Any, meta: dict[str, Any], config: Any, test: ds.Strings, beam: int
) -> list[list[int]]:
    """Every test string read by the CTC model with prefix beam search of width ``beam``, 500 strings at a time."""
    images = [im[..., : int(w)] for im, w in zip(test.images, test.widths)]
    read = []
    for i in range(0, len(images), 500):
        read += [
            lab
            for lab, _ in sr.predict(
                model,
                params,
                state,
                images[i : i + 500],
                mean=meta["mean"],
                std=meta["std"],
                width=config.data.width,
                beam=beam,
            )
        ]
    return read


def _print_rows(rows: dict[str, dict[str, Any]], test: ds.Strings, args: argparse.Namespace) -> None:
    """The readers side by side: CER, exact string accuracy, accuracy by length and seconds."""
    lengths = [r["length"] for r in next(iter(rows.values()))["by_length"]]
    columns = ["reader", "CER", "exact", *[f"len {k}" for k in lengths], "s"]
    table = []
    for name, r in rows.items():
        by = {b["length"]: b["string_accuracy"] for b in r["by_length"]}
        table.append(
            [
                name,
                f"{100 * r['cer']:.2f}%",
                f"{100 * r['string_accuracy']:.2f}%",
                *[f"{100 * by.get(k, 0.0):.1f}" for k in lengths],
                f"{r['seconds']:.1f}",
            ]
        )
    harness.print_table(
        f"{len(test.lengths):,} held-out test strings ({args.strings}; digits: {args.digits})",
        columns,
        table,
        left=("reader",),
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    environment.start()
    device = runtime.resolve_device(args.device)
    config = sr.read_config(args.strings)
    model, params, state, meta = sr.load_run(args.strings, device)
    d = sources.load(config.dataset, args.data_root, device=device)
    pools = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)
    test = ds.fixed_set(pools["test"], args.n or config.test_strings, config.data)

    rows: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    rows["crnn + CTC (greedy)"] = sr.evaluate(model, params, state, test, mean=meta["mean"], std=meta["std"])
    rows["crnn + CTC (greedy)"]["seconds"] = time.perf_counter() - t0
    if args.beam:
        t0 = time.perf_counter()
        read = _beam_readings(model, params, state, meta, config, test, args.beam)
        rows[f"crnn + CTC (beam {args.beam})"] = {**score(read, test), "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    rows["segment + digit CNN (as is)"] = {
        **score(segment_and_classify(args.digits, test, device), test),
        "seconds": time.perf_counter() - t0,
    }
    _print_rows(rows, test, args)
    result = {"strings": args.strings, "digits": args.digits, "n": len(test.lengths), "rows": rows}
    if args.json:
        harness.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
