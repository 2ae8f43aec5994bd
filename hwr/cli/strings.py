"""The strings side of ``hwr train | evaluate | predict`` and ``hwr data show mnist-strings``: parse the options
that apply, call ``hwr.tasks.strings.training``, print tables and draw the figures. Not a command group of its own:
``hwr.cli.train`` and ``hwr.cli.data`` hand strings runs and the ``mnist-strings`` set over to it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.table import Table

from hwr import pattern, random, recipes, report, runs
from hwr.cli import UsageError, calibrate, environment, read_each, save_inputs, train_guarded
from hwr.cli.train import device_of, execution_of
from hwr.config import DataSettings, from_dict
from hwr.data import catalog, digits, sources
from hwr.data import strings as ds
from hwr.tasks import strings as sr
from hwr.tasks.strings.confidence import BEAM, from_characters

__all__ = ["SHOW_NAME", "cmd_evaluate", "cmd_predict", "cmd_show", "cmd_train", "reading_format"]

SHOW_NAME = "mnist-strings"  # `hwr data show mnist-strings`


def _length_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for col in ("length", "strings", "CER", "string accuracy"):
        table.add_column(col, justify="right")
    for row in summary["by_length"]:
        table.add_row(
            str(row["length"]), f"{row['count']:,}", f"{100 * row['cer']:.2f}%", f"{100 * row['string_accuracy']:.2f}%"
        )
    table.add_section()
    table.add_row(
        "all", f"{summary['count']:,}", f"{100 * summary['cer']:.2f}%", f"{100 * summary['string_accuracy']:.2f}%"
    )
    return table


class Progress(report.Progress):
    """``report.Progress`` with the strings' validation figures (CER, string accuracy) in the epoch line."""

    def on_epoch_end(self, epoch: int, state: Any, record: dict[str, Any]) -> None:
        self.bar.remove_task(self.task)
        self.bar.stop()
        self.console.print(
            f"epoch {record['epoch']:>2}/{self.epochs}  loss {record['train_loss']:.4f}  "
            f"train exact {record['train_accuracy']:.3f}  val CER {100 * record['val_cer']:.2f}%  "
            f"exact {record['val_accuracy']:.3f}  {record['samples_per_s']:,.0f}/s  {record['train_seconds']:.1f}s",
            soft_wrap=True,
            highlight=False,
        )


# ---------------------------------------------------------------------------------------------- train


def _config(args: argparse.Namespace) -> sr.StringsConfig:
    base = recipes.RECIPES.get(args.recipe)
    if not isinstance(base, sr.StringsConfig):
        base = recipes.RECIPES["strings"]
    if args.model not in (None, "crnn"):
        raise UsageError(
            f"strings are read by the crnn family (per-column CTC scores), not {args.model!r}; use --model crnn"
        )
    if args.augment is not None:
        raise UsageError("--augment does not apply to strings (their variation is part of the data); omit it")
    if args.dataset is not None and args.dataset not in catalog.names():
        raise UsageError(f"unknown dataset {args.dataset!r}; choose one of {', '.join(catalog.names())}")
    changes = {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "optim": dataclasses.replace(base.optim, lr=args.lr) if args.lr is not None else None,
        "source": str(Path(args.source).resolve()) if args.source else None,  # absolute: resumes from anywhere
        "test_strings": args.limit_test,
        "val_strings": min(args.limit_test, base.val_strings) if args.limit_test else None,
    }
    if args.limit_train:  # N training strings per epoch
        changes["steps"] = max(1, args.limit_train // (args.batch_size or base.batch_size))
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def cmd_train(args: argparse.Namespace) -> int:
    """``hwr train`` of a strings run under the execution the flags ask for."""
    execution = execution_of(args)
    out = Path(args.out)
    config = sr.read_config(out) if args.resume else _config(args)
    if config.source:
        runs.read_source(config.source)  # a clear error for a bad --from before any data is loaded
    result = train_guarded(
        lambda: sr.run(
            config,
            out,
            resume=args.resume,
            callbacks=[Progress(config.epochs)],
            data=environment.data_at(args.data_root),
            execution=execution,
            draw=report.draw_strings_run,
        ),
        args,
    )
    if isinstance(result, int):
        return result
    t = result["test"]
    report.console.print(_length_table(t, f"test: {t['count']:,} held-out strings"))
    timing, used = result["timing"], result["execution"]
    report.console.print(
        f"test CER {100 * t['cer']:.2f}%  string accuracy {100 * t['string_accuracy']:.2f}%  "
        f"train {timing['train_seconds']:.1f}s + compile {timing['compile_seconds']:.1f}s  "
        f"on {used['device']} ({used['device_name']})  -> {out} ({report.STRINGS_FIGURE})"
    )
    return 0


def _test_strings(config: sr.StringsConfig, data: DataSettings, device: torch.device) -> ds.Strings:
    d = sources.load(config.dataset, data, device=device)
    pools = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)
    return ds.fixed_set(pools["test"], config.test_strings, config.data)


# ---------------------------------------------------------------------------------------------- evaluate, predict


def cmd_evaluate(args: argparse.Namespace) -> int:
    device = device_of(args.device)
    config = sr.read_config(args.run)
    model, params, state, meta = sr.load_run(args.run, device)
    if args.dataset not in (None, config.dataset):
        config = dataclasses.replace(config, dataset=args.dataset)  # validates: digit sets only
    test = _test_strings(config, environment.data_at(args.data_root), device)
    s = sr.evaluate(model, params, state, test, mean=meta["mean"], std=meta["std"])
    report.console.print(_length_table(s, escape(f"{args.run} on {s['count']:,} {config.dataset} test strings")))
    report.console.print(
        f"CER {100 * s['cer']:.2f}%  string accuracy {100 * s['string_accuracy']:.2f}%  loss {s['loss']:.4f}"
    )
    calibrate.evaluate_strings(args, model, params, state, meta, test, f"{config.dataset} test strings")
    return 0


def reading_format(args: argparse.Namespace) -> str | None:
    """The pattern ``--length N``, ``--lengths 5,9`` or ``--pattern REGEX`` asks for (``hwr.pattern``), its syntax
    checked (before any run is loaded); None without them."""
    given = [f for f in ("length", "lengths", "pattern") if getattr(args, f, None) is not None]
    if len(given) > 1:
        raise UsageError(f"give one of --length, --lengths and --pattern, not {' and '.join('--' + f for f in given)}")
    if not given:
        return None
    if args.pattern is not None:
        text = args.pattern
    elif args.length is not None:
        text = pattern.lengths_pattern([args.length])
    else:
        parts = [p.strip() for p in args.lengths.split(",")]
        if not all(p.isascii() and p.isdigit() for p in parts):
            raise UsageError(f"--lengths takes whole numbers separated by commas, e.g. 5,9; got {args.lengths!r}")
        text = pattern.lengths_pattern([int(p) for p in parts])
    pattern.parse(text)
    return text


def _automaton(text: str | None, alphabet: str) -> pattern.Automaton | None:
    """The automaton of ``text`` over a run's ``alphabet``; a separator the run cannot emit names the recipe that
    trains one."""
    if text is None:
        return None
    train = "train a run that reads separators: hwr train --recipe strings_forms --out RUN"
    return pattern.automaton(text, alphabet, fixes={c: train for c in ds.SEPARATORS if c not in alphabet})


def _reading_text(labels: list[int], alphabet: str, fsa: pattern.Automaton | None) -> str:
    """A reading as text; with a pattern that the empty reading does not match, ``[]`` means none fitted."""
    if fsa is not None and not labels and not fsa.accepting[0]:
        return "(no reading of this image fits the pattern)"
    return report.string_text(labels, alphabet)


def cmd_predict(args: argparse.Namespace) -> int:
    device = device_of(args.device)
    form = reading_format(args)  # --length / --lengths / --pattern, checked before the run loads
    model, params, state, meta = sr.load_run(args.run, device)
    spec = from_dict(ds.StringSpec, meta["data"])
    alphabet = sr.alphabet_of(meta, args.run)
    fsa = _automaton(form, alphabet)
    reject = calibrate.reject_threshold(args, "strings", device)  # (P, where it came from) or None
    if reject is not None:
        report.console.print(reject[1], highlight=False, soft_wrap=True)
    inputs, readable, failed = read_each(
        args.images, lambda path: sr.normalise_string(digits.load_image(path, string=True), spec)
    )
    if not inputs:
        return 2
    if args.save_input:
        save_inputs(args.save_input, readable, inputs, "_strings.png")
    # the threshold compares the beam reading's probability; a reading format's search is 16 wide either way, so
    # --reject-below never changes what a constrained reading is
    beam = BEAM if reject is not None and fsa is None else 0
    readings = sr.predict(
        model, params, state, inputs, mean=meta["mean"], std=meta["std"], width=spec.width, automaton=fsa, beam=beam
    )
    width = max(len(Path(p).name) for p in readable)
    for path, (labels, conf) in zip(readable, readings):
        confidence = " ".join(f"{c:.2f}" for c in conf)
        sure = from_characters(conf)  # the string's confidence, which a threshold compares
        mark = f"  {sure:.3f}{' ?' if sure < reject[0] else ''}" if reject is not None else ""
        report.console.print(
            f"{Path(path).name:<{width}}  {_reading_text(labels, alphabet, fsa)}  [{confidence}]{mark}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    return 2 if failed else 0  # non-zero when any file could not be read


# ---------------------------------------------------------------------------------------------- data show


def cmd_show(args: argparse.Namespace) -> int:
    """``hwr data show mnist-strings``: ``--n`` training strings (``--rows`` x 3 when given) with their labels."""
    n = max(1, args.n)
    from hwr.cli.data import data_of

    d = sources.load("mnist", data_of(args))
    pool = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)["train"]
    spec = ds.StringSpec()
    s = ds.render(random.key(args.seed), pool, n, spec)
    titles = [report.string_text(t[: int(k)].tolist()) for t, k in zip(s.targets, s.lengths)]
    out = report.save_strings(
        s.images,
        titles,
        args.out,
        title=f"synthetic strings of MNIST training digits ({spec.height}x{spec.width}, seed {args.seed})",
    )
    report.console.print(escape(f"wrote {out}"))
    return 0
