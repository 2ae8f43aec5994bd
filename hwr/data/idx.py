"""The IDX file format of MNIST and its relatives (LeCun's "SN3 / Pascal Vincent" format), read and written.

Layout: two zero bytes, one type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64),
one byte giving the number of dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data in C order,
big-endian. Files may be gzip-compressed (``.gz``). Every malformed file raises ``IdxError`` naming the file and
what is wrong with it (wrong magic, truncated, trailing bytes, unexpected type or rank), never a bare assert.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import torch

from hwr.errors import HwrError
from hwr.files import atomic_write

__all__ = ["IdxError", "decode", "encode", "read", "read_header", "sha256", "write"]

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in _TYPES.items()}  # "u1" -> 0x08, "i4" -> 0x0C, ...


class IdxError(HwrError, ValueError):
    """A file that is not a well-formed IDX file (or not the one expected): the message names the file, the
    problem and the fix."""


def read_header(data: bytes, *, name: str = "<bytes>") -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, offset)`` of an IDX payload; raises ``IdxError`` on a bad magic number."""
    if len(data) < 4:
        raise IdxError(
            f"{name}: {len(data)} bytes is too short for an IDX file (the header alone is 4+ bytes); "
            "the file is truncated: delete it and fetch it again"
        )
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _TYPES or not 1 <= ndim <= 4:
        raise IdxError(
            f"{name}: wrong magic number 0x{data[:4].hex()} (expected 0x0000 + type 08/09/0B/0C/0D/0E + "
            "rank 1-4): not an IDX file (an HTML error page or a compressed file without .gz?)"
        )
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise IdxError(f"{name}: truncated inside the header ({len(data)} of {offset} bytes); fetch it again")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    return _TYPES[code], tuple(int(s) for s in shape), offset


def decode(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """An IDX payload as a native-endian numpy array; raises ``IdxError`` if the size disagrees with the header."""
    dtype, shape, offset = read_header(data, name=name)
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(
            f"{name}: {what}: {len(data):,} bytes, but its header {shape} of {dtype.name} needs "
            f"{expected:,}; delete it and fetch it again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _read_bytes(path: str | os.PathLike) -> bytes:
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the suffix
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IdxError(f"{path}: corrupt gzip data ({e}); delete it and fetch it again") from None
    return raw


def read(
    path: str | os.PathLike,
    *,
    dtype: np.dtype | str | None = None,
    ndim: int | None = None,
) -> torch.Tensor:
    """Read an IDX file (plain or gzip) as a CPU tensor, optionally checking its element type and rank."""
    arr = decode(_read_bytes(path), name=str(path))
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise IdxError(
            f"{path}: holds {arr.dtype.name}, expected {np.dtype(dtype).name}: the wrong file in this place?"
        )
    if ndim is not None and arr.ndim != ndim:
        raise IdxError(f"{path}: has rank {arr.ndim} {arr.shape}, expected rank {ndim}: the wrong file in this place?")
    return torch.from_numpy(arr.copy())


def encode(array: np.ndarray | torch.Tensor) -> bytes:
    """The IDX bytes of an array (uint8, int8, int16, int32, float32 or float64, rank 1-4)."""
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    code = _CODES.get(a.dtype.newbyteorder("=").str[1:])
    if code is None or not 1 <= a.ndim <= 4:
        raise ValueError(f"IDX stores uint8/int8/int16/int32/float32/float64 of rank 1-4, got {a.dtype} {a.shape}")
    header = struct.pack(f">HBB{a.ndim}I", 0, code, a.ndim, *a.shape)
    return header + np.ascontiguousarray(a, dtype=_TYPES[code]).tobytes()


def write(path: str | os.PathLike, array: np.ndarray | torch.Tensor, *, compress: bool | None = None) -> Path:
    """Atomically write ``array`` as an IDX file (gzip when ``compress`` or when the name ends in ``.gz``)."""
    data = encode(array)
    if compress or (compress is None and str(path).endswith(".gz")):
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, lambda p: p.write_bytes(data))


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
