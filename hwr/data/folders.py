"""The user's own images as a data set: ``folder:PATH`` and ``csv:FILE`` names, loaded as a ``catalog.Dataset``.

- ``folder:PATH``: ``PATH/train/<class>/*``, optional ``PATH/val/<class>/*`` and ``PATH/test/<class>/*`` (the
  torchvision ``ImageFolder`` / Hugging Face ``imagefolder`` layout). Class names are the folder names under
  ``train/``, sorted (numerically when every name is an integer, so ``0..9`` are labels 0..9). A folder with only
  ``test/`` loads with an empty training split (``hwr evaluate RUN --dataset folder:PATH`` scores a run on it).
- ``csv:FILE``: a header row with ``file,label`` and optionally ``split`` (train / val / test; none: train),
  file paths relative to the CSV's folder.

Every image goes through ``hwr predict``'s reading path (``digits.load_image`` then ``digits.mnist_style``: any
size, colour and polarity to MNIST's geometry), once: the uint8 results are cached under
``ROOT/folders/<key of the path>/images.pt`` with a manifest of each file's sha1 (the bytes are hashed, never
decoded again), and a file that was edited or added is decoded on the next load, a removed one dropped. Splits a
folder lacks are drawn from ``train/``, stratified and keyed by ``splits.SPLIT_SEED`` (``VAL_FRACTION``,
``TEST_FRACTION``); ``Dataset.provenance`` records how each split was obtained and its per-class counts.
Unreadable or blank images are errors naming the file, unless ``DataSettings.skip_bad`` (``--skip-bad``) skips
them (counted in the provenance); files without an image suffix are ignored.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import torch

from hwr import files, random
from hwr.data import digits, splits
from hwr.data.catalog import Dataset, DatasetSpecError
from hwr.data.optdigits import _conversion_version
from hwr.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "PREFIXES", "TEST_FRACTION", "VAL_FRACTION", "is_user_data", "load"]

PREFIXES = ("folder:", "csv:")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VAL_FRACTION = 0.1  # of train/, per class, when the folder has no val/
TEST_FRACTION = 0.2  # of train/, per class, when the folder has no test/ (drawn before the validation split)
SPLITS = ("train", "val", "test")
CACHE_VERSION = "1"

Entry = tuple[str, str, Path]  # (split, class name, file)


def is_user_data(name: str) -> bool:
    """True for a ``folder:`` or ``csv:`` data set name."""
    return isinstance(name, str) and name.startswith(PREFIXES)


def _class_order(names: set[str]) -> list[str]:
    return sorted(names, key=int) if all(n.isdigit() for n in names) else sorted(names)


def _scan_folder(path: Path) -> list[Entry]:
    if not path.is_dir():
        raise DatasetSpecError(f"folder:{path}: no such folder; give PATH holding train/<class>/ (and val/, test/)")
    present = [s for s in SPLITS if (path / s).is_dir()]
    if not present or present == ["val"]:
        raise DatasetSpecError(f"folder:{path}: no train/ or test/ folder inside; lay it out as PATH/train/<class>/*")
    entries = []
    for split in present:
        for cls in sorted(p for p in (path / split).iterdir() if p.is_dir()):
            images = sorted(f for f in cls.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise DatasetSpecError(f"folder:{path}: class folder {cls} holds no image; remove it or add images")
            entries += [(split, cls.name, f) for f in images]
    return entries


def _scan_csv(path: Path) -> list[Entry]:
    if not path.is_file():
        raise DatasetSpecError(f"csv:{path}: no such file; give a CSV with a header row file,label[,split]")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DatasetSpecError(f"csv:{path}: needs a header row with columns file,label (and optionally split)")
    entries = []
    for i, row in enumerate(rows, start=2):
        split = (row.get("split") or "train").strip()
        if split not in SPLITS:
            raise DatasetSpecError(f"csv:{path} line {i}: split {split!r} is not one of {SPLITS}")
        file = path.parent / row["file"].strip()
        if not file.is_file():
            raise DatasetSpecError(f"csv:{path} line {i}: {file} does not exist")
        entries.append((split, row["label"].strip(), file))
    return entries


def _classes(name: str, entries: list[Entry]) -> list[str]:
    by_split = {s: {c for sp, c, _ in entries if sp == s} for s in SPLITS}
    known = by_split["train"] or by_split["test"]
    for split in ("val", "test"):
        extra = by_split[split] - known
        if extra and by_split["train"]:
            raise DatasetSpecError(
                f"{name}: class(es) {sorted(extra)} in {split}/ but not in train/; add their training images "
                "or remove them"
            )
    return _class_order(known)


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _decode(path: Path) -> torch.Tensor:
    try:
        return digits.mnist_style(digits.load_image(path))
    except FileNotFoundError as e:
        raise InputError(str(e)) from None


def _images(name: str, entries: list[Entry], cache: Path, skip_bad: bool) -> tuple[dict[str, torch.Tensor], list]:
    """Each file's uint8 ``(1, 28, 28)`` image keyed by its sha1, decoding only what the cache lacks; the cache is
    rewritten atomically when anything was decoded. Returns ``(images by sha1, skipped (file, why) pairs)``."""
    saved: dict[str, Any] = {}
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
        except Exception:
            saved = {}
        if saved.get("version") != f"{CACHE_VERSION}:{_conversion_version()}":
            saved = {}
    old: dict[str, torch.Tensor] = saved.get("images", {})
    out, skipped, decoded = {}, [], 0
    for _, _, file in entries:
        digest = _sha1(file)
        if digest in old:
            out[digest] = old[digest]
            continue
        try:
            out[digest] = _decode(file)
            decoded += 1
        except InputError as e:
            if not skip_bad:
                raise InputError(
                    f"{name}: {e}; fix or remove the file, or pass --skip-bad to skip such files"
                ) from None
            skipped.append((str(file), str(e)))
    if decoded or set(out) != set(old):
        version = f"{CACHE_VERSION}:{_conversion_version()}"
        files.atomic_write(cache, lambda p: torch.save({"version": version, "images": out}, p))
    return out, skipped


def _stack(entries: list[Entry], images: dict, hashes: dict, classes: list[str], split: str):
    chosen = [(c, f) for s, c, f in entries if s == split and hashes.get(f) in images]
    if not chosen:
        return torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    x = torch.stack([images[hashes[f]] for _, f in chosen])
    y = torch.tensor([classes.index(c) for c, _ in chosen], dtype=torch.int64)
    return x, y


def _draw(name: str, x, y, fraction: float, fold: int, split: str, classes: list[str]):
    """``(rest, drawn)`` pairs: a stratified ``fraction`` of ``(x, y)`` held out as ``split``, keyed."""
    counts = torch.bincount(y, minlength=len(classes))
    few = [classes[c] for c in range(len(classes)) if counts[c] < 2]
    if few:
        raise DatasetSpecError(
            f"{name}: class(es) {few} have fewer than 2 images in train/: too few to draw a {split} split from; "
            f"add a {split}/ folder, add images, or use validation='kfold' with a val/ folder for the rest"
        )
    rest, drawn = splits.stratified_split(random.fold_in(random.key(splits.SPLIT_SEED), fold), y, fraction)
    return (x[rest], y[rest]), (x[drawn], y[drawn])


def _cache_path(root: Path, source: Path) -> Path:
    key = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:16]
    return root / "folders" / f"{source.name}-{key}" / "images.pt"


def load(name: str, root: Path, *, skip_bad: bool = False) -> Dataset:
    """The ``folder:PATH`` or ``csv:FILE`` data set ``name`` on the CPU (see the module docstring)."""
    kind, _, where = name.partition(":")
    source = Path(where).expanduser()
    entries = _scan_folder(source) if kind == "folder" else _scan_csv(source)
    classes = _classes(name, entries)
    images, skipped = _images(name, entries, _cache_path(root, source), skip_bad)
    hashes = {f: _sha1(f) for _, _, f in entries}
    pairs = {s: _stack(entries, images, hashes, classes, s) for s in SPLITS}
    how = {s: "given" if any(e[0] == s for e in entries) else "" for s in SPLITS}
    if len(pairs["train"][1]):
        if not how["test"]:
            pairs["train"], pairs["test"] = _draw(name, *pairs["train"], TEST_FRACTION, 12, "test", classes)
            how["test"] = f"drawn from train/: {TEST_FRACTION:g} per class, stratified, SPLIT_SEED fold 12"
        if not how["val"]:
            pairs["train"], pairs["val"] = _draw(name, *pairs["train"], VAL_FRACTION, 11, "val", classes)
            how["val"] = f"drawn from train/: {VAL_FRACTION:g} of the rest per class, stratified, SPLIT_SEED fold 11"
    provenance = {
        "source": str(source.resolve()),
        "classes": classes,
        "splits": {
            s: {"how": how[s] or "absent", "counts": torch.bincount(pairs[s][1], minlength=len(classes)).tolist()}
            for s in SPLITS
        },
        "skipped": skipped,
    }
    val = pairs["val"] if len(pairs["val"][1]) else (None, None)
    return Dataset(name, *pairs["train"], *pairs["test"], tuple(classes), *val, provenance=provenance)
