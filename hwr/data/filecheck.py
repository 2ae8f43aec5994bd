"""Checking and writing a data set's files: recorded sha256 (remembered in a stamp file so a load does not rehash
55 MB every time), IDX headers against file sizes for the sets without checksums, gzip files placed by hand, and
the atomic writes every way of obtaining data ends with."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import zlib
from pathlib import Path
from typing import NamedTuple

from hwr import files
from hwr.data import idx
from hwr.data.catalog import IdxSource

__all__ = ["STAMP", "FileInfo", "file_infos", "gunzip_present", "header_problem", "problems", "write"]

STAMP = ".hwr-verified.json"


class FileInfo(NamedTuple):
    path: Path
    size: int
    sha256: str


def header_problem(path: Path) -> str | None:
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


def problems(source: IdxSource, folder: Path) -> dict[str, str]:
    """Files that are missing, fail their recorded sha256 or (without one) disagree with their own header, with
    the reason; empty when all are good.

    A stamp file remembers (size, mtime) of files already hashed, so a load does not rehash 55 MB every time."""
    stamp_path = folder / STAMP
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
            why = header_problem(path)
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


def write(path: Path, data: bytes) -> None:
    """Atomic write, then the usual data-file mode (readable by all, as a download would leave it)."""
    files.write_bytes(path, data)
    path.chmod(0o644)


def gunzip_present(source: IdxSource, folder: Path, src: Path | None = None) -> list[str]:
    """Decompress ``NAME.gz`` (in ``folder``, or in ``src``) into ``folder/NAME`` for each missing file."""
    done = []
    for fname in source.filenames:
        target, gz = folder / fname, (src or folder) / f"{fname}.gz"
        if not target.exists() and gz.is_file():
            try:
                data = gzip.decompress(gz.read_bytes())
            except (OSError, EOFError, zlib.error) as e:  # bad header, cut short, corrupt deflate data
                raise idx.IdxError(f"{gz}: corrupt gzip data ({e}); delete it and fetch it again") from None
            write(target, data)
            done.append(fname)
    return done


def file_infos(folder: Path, fnames: tuple[str, ...]) -> tuple[FileInfo, ...]:
    """Each file's path, size and sha256."""
    return tuple(FileInfo(folder / f, (folder / f).stat().st_size, idx.sha256(folder / f)) for f in fnames)
