"""The ``hwr`` command: thin subcommands over the library. Each ``hwr/cli/<group>.py`` module adds its
subparsers with ``add_parsers(subparsers)`` and sets ``func`` on them; ``main`` parses, calls, and turns a
``hwr.errors.HwrError`` (``UsageError`` and the library's own error classes: bad input the user can fix) into one
clear line and exit code 2; any other exception is a bug: one line that says so and exit code 1. ``--debug``
shows tracebacks.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hwr.errors import HwrError

__all__ = [
    "COMMANDS",
    "UsageError",
    "build_parser",
    "environment_error",
    "main",
    "resume_command",
    "save_inputs",
    "saved_names",
    "train_guarded",
]


class UsageError(HwrError):
    """Bad input from the user: printed as one line, exit code 2."""


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues the run ``args`` started (it works for a finetune too: config.json holds
    everything), with the data root when it is not the default one and ``--skip-bad`` when it was given."""
    from hwr.cli import environment

    parts = ["hwr", "train", "--out", str(args.out), "--resume"]
    root = getattr(args, "data_root", None)
    if root is not None and Path(root) != environment.read().data.root:
        parts += ["--data-root", str(root)]
    if getattr(args, "skip_bad", False):
        parts.append("--skip-bad")
    return " ".join(shlex.quote(p) for p in parts)


def train_guarded(train: Callable[[], dict[str, Any]], args: argparse.Namespace) -> dict[str, Any] | int:
    """``train()``'s result, or the exit code after telling the user what happened: 1 for a loss that turned
    NaN (the last good checkpoint kept), 130 for Ctrl-C (with the command that resumes, ``resume_command``)."""
    from hwr import report
    from hwr.engine.train import NonFiniteLoss

    try:
        return train()
    except NonFiniteLoss as e:
        report.err_console.print(f"[red]stopped:[/] {e}; checkpoint kept in {args.out}", highlight=False)
        return 1
    except KeyboardInterrupt:
        report.err_console.print(f"[yellow]interrupted[/]: resume with  {resume_command(args)}", highlight=False)
        return 130


def saved_names(paths: Sequence[str], suffix: str, taken: Sequence[str] = ()) -> list[str]:
    """One file name per input for ``--save-input``: ``STEM{suffix}``, with ``-2``, ``-3``, ... added in input order
    where two inputs share a stem (``a/1.png`` and ``b/1.png``) or the name is ``taken`` (an input file in the
    folder written to), so no picture overwrites another or an input."""
    used: set[str] = set(taken)
    names = []
    for path in paths:
        stem, k = Path(path).stem, 1
        name = f"{stem}{suffix}"
        while name in used:
            k += 1
            name = f"{stem}-{k}{suffix}"
        used.add(name)
        names.append(name)
    return names


def save_inputs(folder: str | Path, paths: Sequence[str], images: Sequence[Any], suffix: str) -> list[Path]:
    """Write each uint8 ``(1, H, W)`` image the model saw into ``folder`` (``saved_names``); a renamed one is
    said on stderr. Returns the files written."""
    from PIL import Image

    from hwr import report

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken = [Path(p).name for p in paths if Path(p).resolve().parent == folder.resolve()]  # inputs stay as they are
    written = []
    for path, name, img in zip(paths, saved_names(paths, suffix, taken), images):
        Image.fromarray(img[0].numpy()).save(folder / name)
        if name != f"{Path(path).stem}{suffix}":
            why = "an input file" if f"{Path(path).stem}{suffix}" in taken else "another input"
            report.err_console.print(f"saved {path} as {folder / name} ({why} has its name)", highlight=False)
        written.append(folder / name)
    return written


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


# Every top-level command: the module that defines it and its one-line help. ``hwr --help`` (and a mistyped
# command) lists these without importing any command module, so it imports no torch; the module of the command
# given is imported and adds its full parser. tests/cli/test_cli.py checks this table against the modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("hwr.cli.data", "data sets: list, fetch, info, show, compare"),
    "train": ("hwr.cli.train", "train a model from a recipe into a run folder"),
    "finetune": ("hwr.cli.train", "fine-tune a trained run on another dataset"),
    "evaluate": ("hwr.cli.train", "metrics of a trained run on a dataset's test split"),
    "predict": ("hwr.cli.train", "classify real image files (PNG, JPEG, ...)"),
    "calibrate": ("hwr.cli.calibrate", "fit a run's temperature and reject thresholds on its validation split"),
    "study": ("hwr.cli.study", "Optuna studies: run, show, plot, best"),
    "export": ("hwr.cli.export", "a trained run as an ONNX model or a torch.export program"),
    "serve": ("hwr.cli.serve", "a local web page to draw or upload a digit or string and read it"),
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (``--debug`` is the only top-level one)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``hwr`` parser. Given ``argv``, only the named command's module is imported (the other commands are
    listed from ``COMMANDS``); without it (``None``), every command's full parser is built."""
    parser = argparse.ArgumentParser(prog="hwr", description="Pure-functional handwriting recognition.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    command = None if argv is None else _command_of(argv)
    wanted = list(dict.fromkeys(m for m, _ in COMMANDS.values())) if argv is None else []
    if command in COMMANDS:
        wanted = [COMMANDS[command][0]]
    for module in wanted:
        importlib.import_module(module).add_parsers(sub)
    for name, (_, text) in COMMANDS.items():  # the others: listed, not built
        if name not in sub.choices:
            sub.add_parser(name, help=text)
    return parser


# errno -> the fix (the cause is the error's own strerror): the machine's state (permissions, a read-only or full disk), not a bug
_ENVIRONMENT_ERRORS = {
    errno.EACCES: "choose a folder you can write (--out, --root, --data-root) or fix its mode",
    errno.EPERM: "choose a folder you can write (--out, --root, --data-root) or fix its mode",
    errno.EROFS: "choose a folder on a writable disk",
    errno.ENOSPC: "free space or choose a folder on another disk",
    errno.EDQUOT: "free space or choose a folder on another disk",
    # a file where a folder is needed, or a folder where a file is (--save-input a.png, --out x.onnx/y.onnx)
    errno.EEXIST: "a file of that name is in the way: choose another path (--out, --save-input)",
    errno.ENOTDIR: "a file stands where a folder is needed: choose another path (--out, --save-input)",
    errno.EISDIR: "a folder stands where a file is written: choose another path (--out)",
}


def environment_error(e: OSError) -> str | None:
    """One line for an ``OSError`` the user's environment caused (``_ENVIRONMENT_ERRORS``), naming the path and
    the fix; ``None`` for any other (a bug, reported as one)."""
    if e.errno not in _ENVIRONMENT_ERRORS:
        return None
    where = f"cannot write {e.filename}" if e.filename else "cannot write"
    return f"{where}: {e.strerror or os.strerror(e.errno)}; {_ENVIRONMENT_ERRORS[e.errno]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hwr`` console script; returns the exit code."""
    from hwr.cli import environment

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    if not args.debug:
        environment.quiet_library_warnings()
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
    except OSError as e:
        if args.debug or (line := environment_error(e)) is None:
            raise
        print(f"hwr: error: {line}", file=sys.stderr)
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
