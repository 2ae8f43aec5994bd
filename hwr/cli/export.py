"""``hwr export RUN --format onnx|torch --out FILE``: a trained run (digits or strings) as an ONNX model or a
``torch.export`` program, with what its outputs mean in ``FILE.json`` (``hwr.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwr.cli import UsageError

__all__ = ["add_parsers", "cmd_export"]

_SUFFIXES = {".onnx": "onnx", ".pt2": "torch"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a trained run as an ONNX model or a torch.export program")
    p.add_argument("run", help="run folder of a finished run (digits or strings)")
    p.add_argument(
        "--format",
        default=None,
        metavar="{onnx,torch}",
        help="onnx (run it with onnxruntime) or torch (a torch.export .pt2 program); default: from --out's suffix",
    )
    p.add_argument("--out", required=True, help="file to write (model.onnx, model.pt2); FILE.json goes beside it")
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help="strings with a GRU/LSTM encoder: the fixed input width in pixels (default: the training width; "
        "narrower strings are padded to it); a transformer encoder takes any width",
    )
    p.set_defaults(func=cmd_export)


def _format(args: argparse.Namespace) -> str:
    if args.format is not None:
        return args.format
    suffix = Path(args.out).suffix
    if suffix not in _SUFFIXES:
        raise UsageError(f"--out {args.out}: say --format onnx or --format torch (or name the file .onnx or .pt2)")
    return _SUFFIXES[suffix]


def cmd_export(args: argparse.Namespace) -> int:
    from hwr import export, report

    done = export.export(args.run, args.out, _format(args), width=args.width)
    info, size = done.info, done.path.stat().st_size
    check = "not checked (onnxruntime is not installed)" if done.max_diff is None else f"{done.max_diff:.1e}"
    shape = lambda s: "(" + ", ".join(str(d) for d in s) + ")"
    report.console.print(
        f"wrote {done.path} ({info['format']}, {size / 1e6:.2f} MB) and {done.info_path} in {done.seconds:.1f}s\n"
        f"input {info['input']['name']} uint8 {shape(info['input']['shape'])} -> "
        f"{info['output']['name']} {shape(info['output']['shape'])}; "
        f"max |logit - hwr's| on check images: {check}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    return 0
