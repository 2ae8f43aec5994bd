"""The ``hwr`` command: thin subcommands over the library. Each ``hwr/cli/<group>.py`` module adds its
subparsers with ``add_parsers(subparsers)`` and sets ``func`` on them; ``main`` parses, calls, and turns a
``hwr.errors.HwrError`` (``UsageError`` and the library's own error classes: bad input the user can fix) into one
clear line and exit code 2; any other exception is a bug: one line that says so and exit code 1. ``--debug``
shows tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hwr.errors import HwrError

__all__ = ["UsageError", "main"]

# Subcommand groups, in the order `hwr --help` lists them.
GROUPS = ("data", "train", "study")


class UsageError(HwrError):
    """Bad input from the user: printed as one line, exit code 2."""


def train_guarded(train: Callable[[], dict[str, Any]], out: str | Path) -> dict[str, Any] | int:
    """``train()``'s result, or the exit code after telling the user what happened: 1 for a loss that turned
    NaN (the last good checkpoint kept), 130 for Ctrl-C (with the command that resumes)."""
    from hwr import report
    from hwr.engine.train import NonFiniteLoss

    try:
        return train()
    except NonFiniteLoss as e:
        report.err_console.print(f"[red]stopped:[/] {e}; checkpoint kept in {out}")
        return 1
    except KeyboardInterrupt:
        report.err_console.print(f"[yellow]interrupted[/]: resume with  hwr train --out {out} --resume")
        return 130


def read_each(paths: Sequence[str], read: Callable[[str], Any]) -> tuple[list[Any], list[str], int]:
    """``(inputs, readable paths, failures)``: ``read`` applied to every path; each file it cannot read
    (``ValueError``, ``OSError``) is reported on its own stderr line and skipped, so one bad file among many
    does not stop the others (``predict`` exits non-zero at the end)."""
    from hwr import report

    inputs, readable, failed = [], [], 0
    for path in paths:
        try:
            inputs.append(read(path))
            readable.append(path)
        except (ValueError, OSError) as e:
            report.err_console.print(
                f"hwr: error: {e if str(path) in str(e) else f'{path}: {e}'}", markup=False, highlight=False
            )
            failed += 1
    return inputs, readable, failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwr", description="Pure-functional handwriting recognition.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        try:
            module = importlib.import_module(f"hwr.cli.{group}")
        except ModuleNotFoundError as e:
            if e.name == f"hwr.cli.{group}":
                continue  # group not built yet
            raise
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hwr`` console script; returns the exit code."""
    from hwr.cli import environment

    args = build_parser().parse_args(argv)
    environment.start()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except HwrError as e:  # the project's own errors: something the user can fix
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"hwr: error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else is a bug in hwr, never reported as bad input
        if args.debug:
            raise
        print(
            f"hwr: internal error ({type(e).__name__}: {e}); this is a bug in hwr, not in your input: rerun "
            "with --debug and report the traceback",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
