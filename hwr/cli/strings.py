"""The strings side of ``hwr train | evaluate | predict`` and ``hwr data show mnist-strings``: parse the options
that apply, call ``hwr.tasks.strings.training``, print tables and draw the figures. Not a command group of its own:
``hwr.cli.train`` and ``hwr.cli.data`` hand strings runs and the ``mnist-strings`` set over to it."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from hwr import random, recipes, report
from hwr.cli import UsageError, read_each, train_guarded
from hwr.data import digits, sources
from hwr.data import strings as ds
from hwr.engine import runtime
from hwr.engine.execution import Execution
from hwr.tasks.strings import training as sr

__all__ = ["SHOW_NAME", "cmd_evaluate", "cmd_predict", "cmd_show", "cmd_train", "save_strings", "wants_train"]

SHOW_NAME = "mnist-strings"  # `hwr data show mnist-strings`
FIGURE = "strings.png"


# ---------------------------------------------------------------------------------------------- figures


def save_strings(
    images: torch.Tensor, titles: Sequence[str], path: str | os.PathLike, *, ncols: int = 3, title: str | None = None
) -> Path:
    """A grid of string images ``(N, 1, H, W)`` uint8 (ink bright), each captioned, drawn dark on white."""
    import matplotlib.pyplot as plt

    x = images[:, 0].cpu().numpy()
    n = max(len(x), 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    aspect = x.shape[2] / x.shape[1] if len(x) else 5.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 0.55 * aspect, nrows * 0.95), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(x):
            ax.imshow(255 - x[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(titles[i], fontsize=8, family="monospace")
    if title:
        fig.suptitle(title, fontsize=9)
    return report.save_figure(fig, path)


def _text(labels: Sequence[int]) -> str:
    return "".join(str(d) for d in labels) or "(empty)"


def _figure(
    run_dir: Path, model: Any, params: Any, state: Any, test: ds.Strings, mean: float, std: float, n: int = 24
) -> Path:
    """Test strings (3 of each length) with their readings: ``truth -> reading``, errors marked."""
    lengths = test.lengths.cpu()
    pick = torch.cat([(lengths == k).nonzero().squeeze(1)[:3] for k in range(1, int(lengths.max()) + 1)])[:n]
    images = test.images[pick]
    widths = [int(w) for w in test.widths[pick]]
    read = sr.predict(
        model, params, state, [im[..., :w] for im, w in zip(images, widths)], mean=mean, std=std, width=images.shape[-1]
    )
    titles = []
    for i, (labels, _conf) in zip(pick.tolist(), read):
        truth = _text(test.targets[i, : int(test.lengths[i])].tolist())
        got = _text(labels)
        titles.append(f"{truth} -> {got}" + ("" if got == truth else "  ✗"))
    return save_strings(images, titles, run_dir / FIGURE, title="held-out test strings: truth -> reading (greedy CTC)")


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
            f"exact {record['val_accuracy']:.3f}  {record['samples_per_s']:,.0f}/s",
            soft_wrap=True,
        )


# ---------------------------------------------------------------------------------------------- train


def wants_train(args: argparse.Namespace) -> bool:
    """Whether ``hwr train`` with these arguments trains a strings model."""
    if args.resume:
        return sr.is_strings_run(args.out)
    return isinstance(recipes.RECIPES.get(args.recipe), sr.StringsConfig) or args.model == "crnn"


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
    if args.dataset is not None and args.dataset not in sources.names():
        raise UsageError(f"unknown dataset {args.dataset!r}; choose one of {', '.join(sources.names())}")
    changes = {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "optim": dataclasses.replace(base.optim, lr=args.lr) if args.lr is not None else None,
        "source": args.source,
        "test_strings": args.limit_test,
        "val_strings": min(args.limit_test, base.val_strings) if args.limit_test else None,
    }
    if args.limit_train:  # N training strings per epoch
        changes["steps"] = max(1, args.limit_train // (args.batch_size or base.batch_size))
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def cmd_train(args: argparse.Namespace, execution: Execution) -> int:
    """``hwr train`` of a strings run under ``execution`` (the flags ``hwr.cli.train`` parsed and checked)."""
    out = Path(args.out)
    config = sr.read_config(out) if args.resume else _config(args)
    if config.source:
        sr.read_source(config.source)  # a clear error for a bad --from before any data is loaded
    result = train_guarded(
        lambda: sr.run(
            config,
            out,
            resume=args.resume,
            callbacks=[Progress(config.epochs)],
            data_root=args.data_root,
            network=runtime.data_settings_from_env().network,
            execution=execution,
            draw=lambda run_dir, f: _figure(run_dir, *f),
        ),
        out,
    )
    if isinstance(result, int):
        return result
    t = result["test"]
    report.console.print(_length_table(t, f"test: {t['count']:,} held-out strings"))
    timing, used = result["timing"], result["execution"]
    report.console.print(
        f"test CER {100 * t['cer']:.2f}%  string accuracy {100 * t['string_accuracy']:.2f}%  "
        f"train {timing['train_seconds']:.1f}s + compile {timing['compile_seconds']:.1f}s  "
        f"on {used['device']} ({used['device_name']})  -> {out} ({FIGURE})"
    )
    return 0


def _test_strings(config: sr.StringsConfig, data_root: str | None, device: torch.device | None = None) -> ds.Strings:
    network = runtime.data_settings_from_env().network  # the CLI reads $HWR_OFFLINE
    d = sources.load(config.dataset, data_root, device=device or torch.device("cpu"), network=network)
    pools = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)
    return ds.fixed_set(pools["test"], config.test_strings, config.data)


# ---------------------------------------------------------------------------------------------- evaluate, predict


def cmd_evaluate(args: argparse.Namespace, device: torch.device) -> int:
    config = sr.read_config(args.run)
    model, params, state, meta = sr.load_run(args.run, device)
    if args.dataset not in (None, config.dataset):
        config = dataclasses.replace(config, dataset=args.dataset)  # validates: digit sets only
    test = _test_strings(config, args.data_root, device)
    s = sr.evaluate(model, params, state, test, mean=meta["mean"], std=meta["std"])
    report.console.print(_length_table(s, f"{args.run} on {s['count']:,} {config.dataset} test strings"))
    report.console.print(
        f"CER {100 * s['cer']:.2f}%  string accuracy {100 * s['string_accuracy']:.2f}%  loss {s['loss']:.4f}"
    )
    return 0


def cmd_predict(args: argparse.Namespace, device: torch.device) -> int:
    model, params, state, meta = sr.load_run(args.model, device)
    spec = ds.StringSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["data"].items()})
    inputs, readable, failed = read_each(args.images, lambda path: sr.normalise_string(digits.load_image(path), spec))
    if not inputs:
        return 2
    if args.save_input:
        from PIL import Image

        folder = Path(args.save_input)
        folder.mkdir(parents=True, exist_ok=True)
        for path, img in zip(readable, inputs):
            Image.fromarray(img[0].numpy()).save(folder / f"{Path(path).stem}_strings.png")
    readings = sr.predict(model, params, state, inputs, mean=meta["mean"], std=meta["std"], width=spec.width)
    width = max(len(Path(p).name) for p in readable)
    for path, (labels, conf) in zip(readable, readings):
        confidence = " ".join(f"{c:.2f}" for c in conf)
        report.console.print(
            f"{Path(path).name:<{width}}  {_text(labels)}  [{confidence}]",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    return 2 if failed else 0  # non-zero when any file could not be read


# ---------------------------------------------------------------------------------------------- data show


def cmd_show(args: argparse.Namespace) -> int:
    """``hwr data show mnist-strings``: ``--n`` training strings (``--rows`` x 3 when given) with their labels."""
    n = max(1, args.n)
    d = sources.load("mnist", args.root)
    pool = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)["train"]
    spec = ds.StringSpec()
    s = ds.render(random.key(args.seed), pool, n, spec)
    titles = [_text(t[: int(k)].tolist()) for t, k in zip(s.targets, s.lengths)]
    out = save_strings(
        s.images,
        titles,
        args.out,
        title=f"synthetic strings of MNIST training digits ({spec.height}x{spec.width}, seed {args.seed})",
    )
    report.console.print(f"wrote {out}")
    return 0
