"""Exported models against hwr: a digit run and a strings run exported as ONNX and as a torch.export program
(``hwr.export``), each file run on test images (ONNX in onnxruntime, the program loaded back by
``torch.export.load``) and compared with hwr's own logits: the largest absolute logit difference, the predictions
that differ, and the seconds each export took.

    python benchmarks/export_parity.py --digits RUN --strings RUN [--n-digits 10000] [--n-strings 1000]
        [--batch 500] [--json OUT]

Digits: the first ``--n-digits`` MNIST test images. Strings: ``--n-strings`` strings rendered from the MNIST test
digits with the run's own spec (key 0), at its training width, read greedily over each string's frames.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from hwr import decode, export, random
from hwr.config import DataSettings, from_dict
from hwr.data import augment, sources
from hwr.data import strings as ds
from hwr.files import write_json
from hwr.tasks import digits
from hwr.tasks import strings as sr

Logits = Callable[[torch.Tensor], torch.Tensor]


def _runners(paths: dict[str, Path]) -> dict[str, Logits]:
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    program = torch.export.load(io.BytesIO(paths["torch"].read_bytes())).module()
    return {"onnx": lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), "torch": program}


def _batched(fn: Logits, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def _digit_inputs(run: Path, n: int) -> tuple[torch.Tensor, Logits, Callable[[torch.Tensor], list[Any]]]:
    model, params, state, meta = digits.load_run(run)
    transform = augment.make_transform(None, meta["mean"], meta["std"])
    x = sources.load("mnist", DataSettings()).test_images[:n]
    return x, lambda b: model.apply(params, state, transform(None, b))[0], lambda z: z.argmax(1).tolist()


def _string_inputs(run: Path, n: int) -> tuple[torch.Tensor, Logits, Callable[[torch.Tensor], list[Any]]]:
    model, params, state, meta = sr.load_run(run)
    spec = from_dict(ds.StringSpec, meta["data"])
    mnist = sources.load("mnist", DataSettings())
    pool = ds.pools(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels)["test"]
    s = ds.render(random.key(0), pool, n, spec)
    frames = model.config.frames(s.widths)
    read = lambda z: decode.to_lists(*decode.greedy(z, frames.clamp(1, z.shape[1]), blank=model.config.blank)[:2])
    return s.images, lambda b: model.apply(params, state, sr.step.normalise(b, meta["mean"], meta["std"]))[0], read


def measure(task: str, run: Path, n: int, batch: int, folder: Path) -> list[dict[str, Any]]:
    """One row per format: export seconds, max |logit difference| and differing predictions on ``n`` images."""
    made = {fmt: export.export(run, folder / f"{task}{sfx}", fmt) for fmt, sfx in export.FORMATS.items()}
    x, hwr_logits, predictions = (_digit_inputs if task == "digits" else _string_inputs)(run, n)
    want = _batched(hwr_logits, x, batch)
    rows = []
    for fmt, fn in _runners({fmt: e.path for fmt, e in made.items()}).items():
        got = _batched(fn, x, batch)
        differ = sum(a != b for a, b in zip(predictions(got), predictions(want)))
        rows.append(
            {
                "task": task,
                "format": fmt,
                "images": len(x),
                "input": made[fmt].info["input"]["shape"],
                "max_abs_logit_diff": float((got - want).abs().max()),
                "predictions_differ": differ,
                "export_seconds": made[fmt].seconds,
                "bytes": made[fmt].path.stat().st_size,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--digits", type=Path, required=True, help="a finished digit run folder")
    p.add_argument("--strings", type=Path, default=None, help="a finished strings run folder")
    p.add_argument("--n-digits", type=int, default=10000)
    p.add_argument("--n-strings", type=int, default=1000)
    p.add_argument("--batch", type=int, default=500, help="images per call (the exports' batch is dynamic)")
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += measure("digits", args.digits, args.n_digits, args.batch, Path(tmp))
        if args.strings is not None:
            rows += measure("strings", args.strings, args.n_strings, args.batch, Path(tmp))
    table = Table(title="exported models against hwr's logits")
    for col in ("task", "format", "images", "input", "max |logit diff|", "predictions differ", "export s", "MB"):
        table.add_column(col, justify="left" if col in ("task", "format", "input") else "right")
    for r in rows:
        shape = "(" + ", ".join(map(str, r["input"])) + ")"
        table.add_row(
            r["task"], r["format"], str(r["images"]), shape, f"{r['max_abs_logit_diff']:.2e}",
            str(r["predictions_differ"]), f"{r['export_seconds']:.1f}", f"{r['bytes'] / 1e6:.2f}",
        )  # fmt: skip
    Console().print(table)
    if args.json is not None:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
