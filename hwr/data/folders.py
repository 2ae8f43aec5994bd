"""The user's own images as a data set: ``folder:PATH`` and ``csv:FILE`` names, loaded as a ``catalog.Dataset``.

- ``folder:PATH``: ``PATH/train/<class>/*``, optional ``PATH/val/<class>/*`` and ``PATH/test/<class>/*`` (the
  torchvision ``ImageFolder`` / Hugging Face ``imagefolder`` layout; class folders may hold subfolders). Split
  folders are matched in any case, and ``valid/``, ``validation/`` and ``dev/`` are ``val/`` (``SPLIT_ALIASES``:
  Roboflow and Hugging Face exports); two folders of one split are an error. The classes are the folder names
  under ``train/`` in Unicode NFC (macOS writes them decomposed), sorted (numerically when every name is an
  integer, so ``0``..``9`` are labels 0..9 and ``10`` follows ``9``); a class in ``val/`` or ``test/`` that
  ``train/`` lacks is an error. Files without an image suffix (``IMAGE_SUFFIXES``: every suffix PIL opens;
  ``notes.txt``, ``.DS_Store``), hidden entries and the folders tools write (``SYSTEM_FOLDERS``: ``__MACOSX/``,
  ``@eaDir/``) are ignored; symlinked folders are followed, and a dangling link
  is an unreadable file. A folder that cannot be listed is an error naming it, even with ``skip_bad`` (a whole
  folder is no bad image).
- ``PATH/unlabeled/`` (or ``unlabelled/``, any case), optional: images without labels (any nesting, no class
  folders), for self-training (``hwr.tasks.digits.selftrain``): ``Dataset.unlabeled_images``. An unlabelled image
  whose content is also a val or test image is dropped (counted in the provenance): no run trains on a scored image.
- ``csv:FILE``: a header row naming the columns ``file`` and ``label`` and optionally ``split`` (``train``, ``val``
  or ``test``, or a folder alias; without the column every row is ``train``), separated by commas (or the
  semicolons or tabs a spreadsheet may write; UTF-8, a BOM allowed); paths relative to the CSV's folder (a path
  written on Windows, ``imgs\\7.png``, read with ``/`` where it does not exist as written);
  labels in NFC. Every listed file is read as an image, whatever its suffix; a file listed twice (by any spelling
  of its path) is an error naming both lines.

A folder or CSV with no training images but a test split loads with empty training tensors and the test split's
classes when ``require_train=False`` (``hwr evaluate RUN --dataset folder:PATH`` scores a run on it, matching the
classes by name: ``on_classes``).

Every image goes through ``hwr predict``'s reading path, ``digits.mnist_style(digits.load_image(path))`` (any size,
colour and polarity to MNIST's uint8 ``(1, 28, 28)``), once: the results are cached in
``ROOT/folders/<sha1 of the resolved path>/images.pt`` with the manifest ``(split, class, relative path, sha1 of
the bytes)`` and the conversion's version (``digits.conversion_version``). Each load hashes every file's bytes
again and decodes only the files whose content the cache lacks: an edited or added file is decoded, a removed
one dropped, the rest reused; the cache is rewritten (atomically) when the manifest changed, and never when loading
fails. A file that cannot be decoded, or holds no ink (blank: one colour), is an error naming it, unless
``skip_bad`` (the CLI's ``--skip-bad``) skips it; the skipped files are listed in the provenance.

Splits the data lacks are drawn from the training images, stratified: ``TEST_FRACTION`` and ``VAL_FRACTION`` of
each class's training images (rounded, at least one, never all: ``splits.held_out_counts``), the first in the
order of a hash of each file's content keyed by ``splits.SPLIT_SEED`` and ``TEST_FOLD`` (test) or ``VAL_FOLD``
(validation, from what test left). A file's place depends on no other file, so the same files always give the
same splits, and adding or removing one leaves the other classes' splits as they were and moves at most the
images at its own class's boundaries: at most one other image into or out of test, and, when validation is drawn
too, at most two in all (one displaced from test may displace one from validation). A class needs an image to
train on plus one per drawn split: 3 images when neither val nor test is given, 2 when one is, 1 when both are. ``Dataset.provenance`` records the path, the
classes, each split's per-class counts and how it was obtained, and the skipped files (JSON-ready).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import pickle
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import torch
from PIL import Image

from hwr import files
from hwr.data import digits, splits
from hwr.data.catalog import Dataset, DatasetSpecError, DataUnavailableError
from hwr.errors import InputError

__all__ = [
    "CACHE_VERSION",
    "IMAGE_SUFFIXES",
    "PREFIXES",
    "SPLITS",
    "SPLIT_ALIASES",
    "TEST_FOLD",
    "TEST_FRACTION",
    "VAL_FOLD",
    "VAL_FRACTION",
    "Entry",
    "absolute_name",
    "cache_file",
    "is_user_data",
    "load",
    "on_classes",
]

PREFIXES = ("folder:", "csv:")
# Not images to a class folder: PIL's stubs for data formats (HDF5, GRIB, BUFR, MPEG, Windows metafiles) and
# vector PostScript (needs Ghostscript).
_NOT_RASTER = frozenset({".bufr", ".grib", ".h5", ".hdf", ".mpeg", ".mpg", ".emf", ".wmf", ".eps", ".ps"})


def _image_suffixes() -> frozenset[str]:
    """Every suffix PIL opens, less ``_NOT_RASTER``: ``.jfif`` (a browser's saved JPEG), ``.jpe``, ``.pbm``,
    ``.tga``, ``.dib``, ``.ico`` and ``.jp2`` count as images as they do for ``hwr predict``, never skipped unseen."""
    Image.init()  # after ``hwr.data.digits`` is imported (above): its HEIC/HEIF opener is registered by then
    return frozenset(e for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN) - _NOT_RASTER


IMAGE_SUFFIXES = _image_suffixes()
SPLITS = ("train", "val", "test")
# a split folder's names, matched in any case (Roboflow writes valid/, Hugging Face validation/, Kaggle Train/)
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
UNLABELED = "unlabeled"  # the split of images without labels (a folder's unlabeled/ or unlabelled/)
_UNLABELED_FOLDERS = ("unlabeled", "unlabelled")
TEST_FRACTION = 0.2  # of each class's training images, held out as test when there is no test split
VAL_FRACTION = 0.1  # of each class's training images, held out as validation when there is no val split
TEST_FOLD, VAL_FOLD = 12, 11  # the draws' keys: a file's rank is a hash keyed by SPLIT_SEED and the fold
CACHE_VERSION = 1  # the cache file's layout


class Entry(NamedTuple):
    """One image of a folder or CSV: its split, class name, file, and path as the manifest records it."""

    split: str
    label: str
    file: Path
    rel: str


def is_user_data(name: object) -> bool:
    """True for a ``folder:`` or ``csv:`` data set name."""
    return isinstance(name, str) and name.startswith(PREFIXES)


def absolute_name(name: str) -> str:
    """``name`` with a ``folder:`` / ``csv:`` path made absolute and resolved, any other name as it is: what a
    run's config stores, so ``--resume`` or ``hwr evaluate RUN`` from another folder reads the same images."""
    if not is_user_data(name):
        return name
    kind, source = _source(name)
    return f"{kind}:{source.resolve()}"


def cache_file(root: Path, name: str) -> Path:
    """Where the converted images of ``name`` are cached under the data root (``os.fsencode``: a path that is not
    UTF-8 hashes as its bytes)."""
    kind, source = _source(name)
    digest = hashlib.sha1(os.fsencode(f"{kind}:{source.resolve()}")).hexdigest()
    return Path(root) / "folders" / digest / "images.pt"


def _source(name: str) -> tuple[str, Path]:
    kind, _, where = name.partition(":")
    if not where.strip():
        raise DatasetSpecError(f"dataset {name!r} names no path; write folder:PATH or csv:FILE")
    return kind, Path(where.strip()).expanduser()


def _nfc(label: str) -> str:
    """A class name in Unicode NFC: macOS writes ``é`` in folder names decomposed (NFD), a CSV mostly composed."""
    return unicodedata.normalize("NFC", label)


def _class_order(names: set[str]) -> list[str]:
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


# Folders that tools write beside a user's images, never a class or a picture of one: macOS's resource forks in a
# zip (``__MACOSX/``), a Synology NAS's thumbnails (``@eaDir/``), Windows' recycle bin and volume information
SYSTEM_FOLDERS = frozenset({"__macosx", "@eadir", "$recycle.bin", "system volume information"})


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FOLDERS


def _visible(path: Path, top: Path) -> bool:
    return not any(_hidden(part) for part in path.relative_to(top).parts)


def _unreadable(name: str, err: OSError) -> NoReturn:
    """Refuse a folder that cannot be listed: skipping it would drop its images without a word."""
    raise InputError(
        f"{name}: cannot read the folder {err.filename} ({err.strerror or err}); make it readable or move it out"
    )


def _listing(name: str, folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; an unreadable folder is an ``InputError`` naming it."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        _unreadable(name, err)


def _files(name: str, top: Path) -> list[Path]:
    """Every file under ``top``: symlinked folders followed (each real folder once, so a link cycle ends), and
    dangling links kept, to be reported as unreadable by ``_convert`` rather than dropped without a word
    (``Path.rglob`` before Python 3.13 neither follows a linked folder nor keeps a dangling link). A subfolder that
    cannot be read is an ``InputError`` naming it, ``--skip-bad`` or not (it is no bad image but a whole folder)."""
    out, seen = [], set()
    for folder, subfolders, names in os.walk(top, followlinks=True, onerror=lambda err: _unreadable(name, err)):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        out += [Path(folder) / n for n in names]
    return out


def _split_folders(name: str, path: Path) -> dict[str, Path]:
    """The split folders of ``path`` by split, named as ``SPLIT_ALIASES`` allows in any case (``Train/``,
    ``valid/``); two folders of one split are an error naming both."""
    found: dict[str, Path] = {}
    for d in _listing(name, path):
        split = SPLIT_ALIASES.get(d.name.lower())
        if split is None or not d.is_dir():
            continue
        if split in found:
            raise DatasetSpecError(
                f"{name}: {found[split].name}/ and {d.name}/ in {path} both hold the {split} split; merge them into "
                "one folder"
            )
        found[split] = d
    return {s: found[s] for s in SPLITS if s in found}


def _scan_split(name: str, path: Path, split: str, top: Path) -> list[Entry]:
    """The images of one split folder ``top``, in label order; class names in NFC (``_nfc``), so folders whose
    names differ only in Unicode form are one class."""
    listing = _listing(name, top)
    loose = [f.name for f in listing if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise DatasetSpecError(f"{name}: {top}/{loose[0]} is not inside a class folder; move it to {split}/<class>/")
    found: dict[str, list[Path]] = {}
    for d in listing:
        if d.is_dir() and not _hidden(d.name):
            found.setdefault(_nfc(d.name), []).append(d)
    if not found:
        raise DatasetSpecError(f"{name}: {top}/ holds no class folder; add {split}/<class>/ images or remove it")
    entries = []
    for label in _class_order(set(found)):
        for cls in found[label]:
            images = sorted(f for f in _files(name, cls) if f.suffix.lower() in IMAGE_SUFFIXES and _visible(f, cls))
            if not images:
                raise DatasetSpecError(
                    f"{name}: class folder {cls} holds no image (PNG, JPEG, ...); add some or remove it"
                )
            entries += [Entry(split, label, f, str(f.relative_to(path))) for f in images]
    return entries


def _scan_folder(name: str, path: Path) -> list[Entry]:
    if not path.is_dir():
        raise DataUnavailableError(f"{name}: {path} is not a folder; give PATH holding train/<class>/ images")
    present = _split_folders(name, path)
    if "train" not in present and "test" not in present:
        if path.name.lower() in SPLIT_ALIASES:  # `folder:PATH/train`: one level too deep
            raise DatasetSpecError(
                f"{name}: {path} is a split folder itself; name the folder that holds it: folder:{path.parent}"
            )
        raise DatasetSpecError(
            f"{name}: no train/ folder in {path}; lay the images out as {path}/train/<class>/* (and optionally "
            "val/<class>/*, test/<class>/*)"
        )
    return [e for split, top in present.items() for e in _scan_split(name, path, split, top)] + _scan_unlabeled(
        name, path
    )


def _scan_unlabeled(name: str, path: Path) -> list[Entry]:
    """The images under ``path/unlabeled/`` (any case, either spelling; any nesting), sorted, with no label."""
    tops = [d for d in _listing(name, path) if d.name.lower() in _UNLABELED_FOLDERS and d.is_dir()]
    if len(tops) > 1:
        raise DatasetSpecError(f"{name}: {tops[0].name}/ and {tops[1].name}/ in {path} both hold unlabelled images")
    if not tops:
        return []
    files = sorted(f for f in _files(name, tops[0]) if f.suffix.lower() in IMAGE_SUFFIXES and _visible(f, tops[0]))
    return [Entry(UNLABELED, "", f, str(f.relative_to(path))) for f in files]


def _delimiter(text: str) -> str:
    """The CSV's separator, from its header row: a comma, or the semicolon or tab a spreadsheet writes where the
    comma is the decimal mark (``file;label``)."""
    first = text.split("\n", 1)[0]
    return next((d for d in (",", ";", "\t") if d in first), ",")


def _scan_csv(name: str, path: Path) -> list[Entry]:
    if not path.is_file():
        raise DataUnavailableError(f"{name}: {path} is not a file; give a CSV with a header row file,label[,split]")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            text = f.read()
        rows = list(csv.reader(io.StringIO(text), delimiter=_delimiter(text)))
    except UnicodeDecodeError:
        raise DatasetSpecError(f"{name}: {path} is not UTF-8 text; save it as CSV UTF-8") from None
    except (OSError, csv.Error) as e:
        raise DatasetSpecError(f"{name}: cannot read {path} as CSV ({e})") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "file" not in header or "label" not in header:
        seen = f" (its first row: {', '.join(rows[0])[:120]})" if rows else " (it is empty)"
        raise DatasetSpecError(
            f"{name}: {path} needs a header row naming the columns file,label (and optionally split){seen}"
        )
    col = {h: header.index(h) for h in ("file", "label", "split") if h in header}
    entries, lines = [], {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in row):
            continue
        cell = {h: row[i].strip() if i < len(row) else "" for h, i in col.items()}
        file, label, split = cell["file"], _nfc(cell["label"]), (cell.get("split") or "train").lower()
        if "\\" in file and not (path.parent / file).exists():  # written on Windows: imgs\7.png
            file = file.replace("\\", "/")
        if not file or not label:
            raise DatasetSpecError(f"{name}: {path} line {line} lacks a file or a label")
        if split not in SPLIT_ALIASES:
            raise DatasetSpecError(f"{name}: {path} line {line}: split {split!r} is not train, val or test")
        if (path.parent / file).is_dir():
            raise DatasetSpecError(f"{name}: {path} line {line}: {path.parent / file} is a folder; list image files")
        if not (path.parent / file).is_file():
            raise DataUnavailableError(f"{name}: {path} line {line}: {path.parent / file} does not exist")
        real = (path.parent / file).resolve()
        if real in lines:
            raise InputError(
                f"{name}: {path} lists {real} twice (lines {lines[real]} and {line}); keep one row per image"
            )
        lines[real] = line
        entries.append(Entry(SPLIT_ALIASES[split], label, path.parent / file, file))
    if not entries:
        raise DatasetSpecError(f"{name}: {path} lists no image")
    return entries


def _classes(name: str, entries: list[Entry], kind: str) -> list[str]:
    """The class names in label order; a val or test class the training images lack is an error."""
    by_split = {s: {e.label for e in entries if e.split == s} for s in SPLITS}
    if not by_split["train"]:
        return _class_order(by_split["val"] | by_split["test"])
    for split in ("val", "test"):
        extra = _class_order(by_split[split] - by_split["train"])
        if extra:
            where = (
                f"is in {split}/ but not in train/"
                if kind == "folder"
                else f"has rows of split {split} but none of train"
            )
            raise DatasetSpecError(
                f"{name}: class {extra[0]!r} {where} (a model trained on it could not predict it); add its "
                "training images or remove it" + (f" (also: {extra[1:]})" if extra[1:] else "")
            )
    return _class_order(by_split["train"])


def _check_counts(
    name: str, entries: list[Entry], classes: list[str], drawn: list[str], kind: str, skipped: Counter | None = None
) -> None:
    """Every class has an image to train on plus one for each split drawn from its training images; a message
    about a class says how many of its training files ``--skip-bad`` skipped (``skipped``: label -> count)."""
    counts = dict.fromkeys(classes, 0)
    for e in entries:
        counts[e.label] += e.split == "train"
    need = 1 + len(drawn)
    for label, n in counts.items():
        if n >= need:
            continue
        images = f"{n} image{'' if n == 1 else 's'} " + ("in train/" if kind == "folder" else "of split train")
        lost = (skipped or {}).get(label, 0)
        if lost:
            images += f" once --skip-bad skipped {lost} unreadable or blank file{'' if lost == 1 else 's'} of it"
        if not drawn or n == 0:  # no split to hold out would help: it needs images
            raise DatasetSpecError(
                f"{name}: class {label!r} has no readable training image"
                + (f" (--skip-bad skipped {lost})" if lost else "")
                + "; add some or remove it"
            )
        what = " and a ".join("validation" if s == "val" else s for s in drawn)
        add = " and ".join(f"a {s}/ folder" if kind == "folder" else f"rows of split {s}" for s in drawn)
        raise DatasetSpecError(
            f"{name}: class {label!r} has {images}: too few to hold out a {what} split from it ({need} "
            f"needed: one to train on, one per split drawn); add {add} of your own (then 1 training image is "
            f"enough), or more images of {label!r}"
        )


def _sha1(file: Path) -> str:
    return hashlib.sha1(file.read_bytes()).hexdigest()


def _version() -> str:
    return f"{CACHE_VERSION}:{digits.conversion_version()}"


def _read_cache(cache: Path) -> tuple[list, dict[str, torch.Tensor], dict[str, str]]:
    """``(manifest, images by sha1, bad files' reasons by sha1)`` of the cache; empty when it is missing, made by
    another conversion, or unreadable (then everything is decoded again)."""
    try:
        saved = torch.load(cache, weights_only=True)
        images, digests = saved["images"], saved["sha1"]
        if (
            saved.get("version") == _version()
            and images.dtype == torch.uint8
            and tuple(images.shape) == (len(digests), 1, 28, 28)
        ):
            return saved["manifest"], dict(zip(digests, images)), dict(saved["bad"])
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, ValueError, pickle.UnpicklingError, EOFError):
        pass
    return [], {}, {}


def _write_cache(cache: Path, manifest: list, images: dict[str, torch.Tensor], bad: dict[str, str]) -> None:
    digests = sorted(images)
    stacked = torch.stack([images[d] for d in digests]) if digests else torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
    saved = {"version": _version(), "manifest": manifest, "sha1": digests, "images": stacked, "bad": bad}
    with contextlib.suppress(OSError):  # a read-only data root still works, decoding on every load
        files.atomic_write(cache, lambda p: torch.save(saved, p))


def _decode(file: Path) -> torch.Tensor:
    return digits.mnist_style(digits.load_image(file))


def _convert(name: str, entries: list[Entry], cached: dict, bad: dict, skip_bad: bool) -> tuple[list, dict, dict]:
    """``(manifest, images by sha1, bad reasons by sha1)`` of ``entries``: the cached images reused, the others
    decoded. A bad file raises ``InputError`` naming it, unless ``skip_bad``."""
    manifest, images, bad_now = [], {}, {}
    for e in entries:
        try:
            digest = _sha1(e.file)
        except OSError as err:
            digest, why = f"unreadable:{e.rel}", f"cannot read the file ({err.strerror or err})"
            bad = {**bad, digest: why}
        manifest.append([e.split, e.label, e.rel, digest])
        if digest in cached:
            images[digest] = cached[digest]
            continue
        if digest not in bad and digest not in bad_now:
            try:
                images[digest] = cached[digest] = _decode(e.file)
                continue
            except (ValueError, OSError) as err:  # InputError: not an image, truncated, blank
                bad_now[digest] = str(err).removeprefix(f"{e.file}: ")
        why = bad.get(digest) or bad_now[digest]
        bad_now[digest] = why
        if not skip_bad:
            raise InputError(f"{name}: {e.file}: {why}; fix or remove the file, or pass --skip-bad to skip such files")
    return manifest, images, bad_now


def _empty() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)


def _stack(chosen: list[tuple[Entry, str]], images: dict, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, 28, 28) uint8, labels (N,) int64)`` of ``(entry, sha1)`` pairs."""
    if not chosen:
        return _empty()
    x = torch.stack([images[d] for _, d in chosen])
    y = torch.tensor([classes.index(e.label) for e, _ in chosen], dtype=torch.int64)
    return x, y


def _rank(digest: str, fold: int) -> bytes:
    """An image's place in its class's order for the drawn split ``fold``: a hash of its content's sha1 keyed by
    ``SPLIT_SEED`` and the fold. It depends on no other file, so adding or removing one moves at most the images at
    its own class's boundary (a keyed permutation of all of them reshuffled every split when one was added)."""
    return hashlib.blake2b(digest.encode(), key=f"{splits.SPLIT_SEED}:{fold}".encode(), digest_size=16).digest()


def _hold_out(chosen: list[tuple[Entry, str]], classes: list[str], fraction: float, fold: int) -> tuple[list, list]:
    """``(rest, drawn)`` of ``(entry, sha1)`` pairs: of each class, ``splits.held_out_counts`` images, the first
    in ``_rank`` order (ties by position); both in the given order."""
    labels = [classes.index(e.label) for e, _ in chosen]
    take = splits.held_out_counts(
        torch.bincount(torch.tensor(labels, dtype=torch.int64), minlength=len(classes)), fraction
    ).tolist()
    by_class: dict[int, list[int]] = {}
    for i in sorted(range(len(chosen)), key=lambda i: (_rank(chosen[i][1], fold), i)):
        by_class.setdefault(labels[i], []).append(i)
    drawn = {i for c, order in by_class.items() for i in order[: take[c]]}
    return [p for i, p in enumerate(chosen) if i not in drawn], [p for i, p in enumerate(chosen) if i in drawn]


def _split_sets(entries: list[Entry], digests: list[str], images: dict, classes: list[str]) -> tuple[dict, dict]:
    """``(pairs, how)``: each split's ``(images, labels)``, the missing ones drawn from train (test first, then
    validation from the rest), and how each came."""
    chosen = {s: [(e, d) for e, d in zip(entries, digests) if e.split == s] for s in SPLITS}
    how: dict[str, dict[str, Any]] = {s: {"origin": "given" if chosen[s] else "absent"} for s in SPLITS}
    drawn = lambda fraction, fold: {
        "origin": "drawn", "from": "train", "fraction": fraction, "seed": splits.SPLIT_SEED, "fold": fold
    }  # fmt: skip
    if chosen["train"] and not chosen["test"]:
        chosen["train"], chosen["test"] = _hold_out(chosen["train"], classes, TEST_FRACTION, TEST_FOLD)
        how["test"] = drawn(TEST_FRACTION, TEST_FOLD)
    if chosen["train"] and not chosen["val"]:
        share = VAL_FRACTION / (1 - TEST_FRACTION) if how["test"]["origin"] == "drawn" else VAL_FRACTION
        chosen["train"], chosen["val"] = _hold_out(chosen["train"], classes, share, VAL_FOLD)  # of train/ as given
        how["val"] = drawn(VAL_FRACTION, VAL_FOLD)
    return {s: _stack(chosen[s], images, classes) for s in SPLITS}, how


def _about(info: dict[str, Any], split: str, kind: str, source: Path, drew: bool) -> str:
    """One line: how a split was obtained (``hwr data info`` prints it)."""
    if info["origin"] == "drawn":
        return (
            f"drawn from the training images: {info['fraction']:.0%} of each class (rounded, at least one), first "
            f"by a content hash keyed by SPLIT_SEED={info['seed']}, fold {info['fold']}: stable as files come and go"
        )
    if info["origin"] == "absent":
        return "none (test only: for scoring a trained run)" if split == "train" else "none"
    folder = info.get("folder", split)
    given = f"{source}/{folder}/" if kind == "folder" else f"the rows of split {split} in {source}"
    return f"given: {given}" + (" less the drawn splits" if split == "train" and drew else "")


def _provenance(kind: str, source: Path, classes: list[str], pairs: dict, how: dict, entries: list[Entry]) -> dict:
    """What ``hwr data info`` shows and a run records: the source, classes, and each split's counts and origin (a
    given split folder as named on disk: ``valid/``, ``Test/``)."""
    out = {"kind": kind, "path": str(source.resolve()), "classes": list(classes), "splits": {}}
    named = {e.split: Path(e.rel).parts[0] for e in entries} if kind == "folder" else {}
    drew = any(how[s]["origin"] == "drawn" for s in SPLITS)
    for s in SPLITS:
        info = dict(how[s], **({"folder": named[s]} if how[s]["origin"] == "given" and s in named else {}))
        info["counts"] = torch.bincount(pairs[s][1], minlength=len(classes)).tolist()
        info["about"] = _about(info, s, kind, source, drew)
        out["splits"][s] = info
    return out


def load(
    name: str, root: Path, *, skip_bad: bool = False, require_train: bool = True, only_test: bool = False
) -> Dataset:
    """The ``folder:PATH`` or ``csv:FILE`` data set ``name`` on the CPU, converted images cached under ``root``
    (see the module docstring). ``require_train=False`` lets a folder with only test (and val) images load, with
    empty training tensors. ``only_test`` (scoring a trained run): where the data gives a test split, the other
    splits are neither read nor checked, and the classes are the test split's (a class of 1 training image, or a
    bad file among them, does not stop ``hwr evaluate``); the test images it converts join the cache. Raises
    ``DataUnavailableError`` (no such path), ``DatasetSpecError`` (layout, classes, too few images) or
    ``InputError`` (a bad image, named; ``skip_bad`` skips it), one line each."""
    kind, source = _source(name)
    scanned = _scan_folder(name, source) if kind == "folder" else _scan_csv(name, source)
    entries = [e for e in scanned if e.split != UNLABELED]
    partial = only_test and any(e.split == "test" for e in entries) and any(e.split != "test" for e in entries)
    trains = not partial and any(e.split == "train" for e in entries)  # scoring a run reads no unlabelled image
    unlabeled = [e for e in scanned if e.split == UNLABELED and trains]
    if partial:
        entries = [e for e in entries if e.split == "test"]
        require_train = False
    classes = _classes(name, entries, kind)
    has = {s: any(e.split == s for e in entries) for s in SPLITS}
    if not has["train"] and (require_train or not has["test"]):
        where = f"{source}/train/<class>/" if kind == "folder" else f"rows of split train in {source}"
        raise DatasetSpecError(
            f"{name} has no training images (only {', '.join(s for s in SPLITS if has[s])}): it can score a trained "
            f"run (hwr evaluate RUN --dataset {name}) but not train one; add {where}"
        )
    drawn = [s for s in ("test", "val") if has["train"] and not has[s]]
    if has["train"]:
        _check_counts(name, entries, classes, drawn, kind)  # before decoding anything
    cache = cache_file(root, name)
    manifest, cached, bad = _read_cache(cache)
    new_manifest, images, bad_now = _convert(name, entries + unlabeled, dict(cached), bad, skip_bad)
    kept = [(e, m[3]) for e, m in zip(entries, new_manifest) if m[3] in images]
    dropped = [(e, m[3]) for e, m in zip(entries + unlabeled, new_manifest) if m[3] not in images]
    skipped = [{"file": e.rel, "why": bad_now[d]} for e, d in dropped]
    if has["train"]:  # skipped files may leave too few, or empty a given val/ or test/, which is then drawn
        left = {s for e, _ in kept for s in [e.split]}
        drawn = [s for s in ("test", "val") if s not in left]
        lost = Counter(e.label for e, _ in dropped if e.split == "train")  # unlabelled ones: no class
        _check_counts(name, [e for e, _ in kept], classes, drawn, kind, lost)
    pairs, how = _split_sets([e for e, _ in kept], [d for _, d in kept], images, classes)
    pool, about, read = _unlabeled(unlabeled, new_manifest[len(entries) :], images, pairs)
    provenance = {**_provenance(kind, source, classes, pairs, how, entries), "skipped": skipped, **about}
    provenance["digest"] = _digest(kept + read, classes, partial)
    if partial:  # the part's new conversions join the whole's cache, whose manifest stays (a full load rewrites it)
        if set(images) - set(cached) or set(bad_now) - set(bad):
            _write_cache(cache, manifest, {**cached, **images}, {**bad, **bad_now})
    elif new_manifest != manifest or bad_now != bad:
        _write_cache(cache, new_manifest, images, bad_now)
    val = pairs["val"] if len(pairs["val"][1]) else (None, None)
    train, test = pairs["train"], pairs["test"]
    return Dataset(name, *train, *test, tuple(classes), *val, provenance=provenance, unlabeled_images=pool)


def _unlabeled(entries: list[Entry], manifest: list, images: dict, pairs: dict) -> tuple:
    """``(images or None, provenance record, (entry, sha1) pairs read)`` of the unlabelled ``entries`` (their
    ``manifest`` rows): the ones that decoded, each content once, less those that are a val or test image, given or
    drawn (counted): self-training must not train on an image it is scored on."""
    scored = {x.numpy().tobytes() for s in ("val", "test") for x in pairs[s][0]}
    seen, pool, read, overlap = set(), [], [], 0
    for e, digest in ((e, m[3]) for e, m in zip(entries, manifest)):
        if digest not in images or digest in seen:
            continue
        seen.add(digest)
        read.append((e, digest))
        if images[digest].numpy().tobytes() in scored:
            overlap += 1
            continue
        pool.append(images[digest])
    about = {"unlabeled": {"count": len(pool), "dropped_as_val_or_test": overlap}} if entries else {}
    return (torch.stack(pool) if pool else None), about, read


def _digest(kept: list[tuple[Entry, str]], classes: list[str], partial: bool) -> str:
    """The identity of the images a load kept: a sha1 over each one's given split, class and content sha1 (the
    drawn splits follow from these) and the class order. A run records it, so a result trained on an earlier state
    of the folder is not taken for one of today's (``hwr.tune.evaluation``)."""
    rows = sorted(f"{e.split}\t{e.label}\t{d}" for e, d in kept)
    text = "\n".join([f"partial={partial}", "\t".join(classes), *rows])
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def on_classes(ds: Dataset, classes: Sequence[str], *, whose: str = "the model") -> Dataset:
    """``ds`` (a user's folder or CSV) with its labels renumbered into ``classes``' order, matched by name, and
    ``classes`` as its classes: a test folder holding only some of a model's classes is scored on the model's
    indices; names are compared in NFC (a run trained before they were normalised matches too). Raises
    ``DatasetSpecError`` naming a class of ``ds`` that ``classes`` lacks."""
    classes = tuple(classes)
    nfc = [_nfc(c) for c in classes]
    unknown = [c for c in ds.classes if _nfc(c) not in nfc]
    if unknown:
        shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        raise DatasetSpecError(
            f"{ds.name}: class {unknown[0]!r} is not one of the {len(classes)} classes of {whose} ({shown})"
            + (f" (nor {unknown[1:]})" if unknown[1:] else "")
            + f"; remove it, or fine-tune on the data first: hwr finetune --from RUN --dataset {ds.name}"
        )
    index = torch.tensor([nfc.index(_nfc(c)) for c in ds.classes], dtype=torch.int64)
    relabel = lambda y: None if y is None else index.to(y.device)[y]
    return ds._replace(
        train_labels=relabel(ds.train_labels),
        val_labels=relabel(ds.val_labels),
        test_labels=relabel(ds.test_labels),
        classes=classes,
    )
