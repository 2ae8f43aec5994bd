"""IDX files: round trip for every element type (plain and gzip), byte-exact headers, and a clear IdxError for
wrong magic, truncation, trailing bytes, corrupt gzip, and the wrong type or rank."""

import gzip
import struct

import numpy as np
import pytest
import torch

from hwr.data import idx


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 4, 6), (2, 3, 4, 5)])
def test_round_trip(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    for name in ("x-idx", "x-idx.gz"):
        path = idx.write(tmp_path / name, a)
        back = idx.read(path)
        assert back.dtype == torch.from_numpy(a).dtype and tuple(back.shape) == shape
        assert np.array_equal(back.numpy(), a)
    assert (tmp_path / "x-idx.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_header_is_the_mnist_format():
    labels = np.array([5, 0, 4], dtype=np.uint8)
    data = idx.encode(labels)
    assert data == struct.pack(">I", 0x0801) + struct.pack(">I", 3) + bytes([5, 0, 4])
    images = np.zeros((2, 28, 28), np.uint8)
    assert idx.encode(images)[:16] == struct.pack(">IIII", 0x0803, 2, 28, 28)
    # big-endian payload for multi-byte types
    assert idx.encode(np.array([1], dtype=np.int32))[-4:] == b"\x00\x00\x00\x01"


def test_read_checks_dtype_and_rank(tmp_path):
    path = idx.write(tmp_path / "labels", np.arange(10, dtype=np.uint8))
    assert idx.read(path, dtype="u1", ndim=1).tolist() == list(range(10))
    with pytest.raises(idx.IdxError, match="expected rank 3"):
        idx.read(path, ndim=3)
    with pytest.raises(idx.IdxError, match="expected int32"):
        idx.read(path, dtype="i4")


def test_wrong_magic(tmp_path):
    path = tmp_path / "page.html"
    path.write_bytes(b"<html><body>404 not found</body></html>")
    with pytest.raises(idx.IdxError, match="wrong magic number"):
        idx.read(path)
    bad_type = tmp_path / "bad-type"
    bad_type.write_bytes(struct.pack(">HBBI", 0, 0x07, 1, 1) + b"\x00")
    with pytest.raises(idx.IdxError, match="wrong magic number"):
        idx.read(bad_type)


def test_truncated_and_trailing(tmp_path):
    data = idx.encode(np.ones((10, 28, 28), np.uint8))
    cut = tmp_path / "cut"
    cut.write_bytes(data[:-100])
    with pytest.raises(idx.IdxError, match=r"truncated: 7,756 bytes, but its header \(10, 28, 28\)"):
        idx.read(cut)
    long = tmp_path / "long"
    long.write_bytes(data + b"junk")
    with pytest.raises(idx.IdxError, match="trailing bytes"):
        idx.read(long)
    header_only = tmp_path / "header"
    header_only.write_bytes(data[:6])
    with pytest.raises(idx.IdxError, match="inside the header"):
        idx.read(header_only)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00\x00")
    with pytest.raises(idx.IdxError, match="too short"):
        idx.read(tiny)


def test_corrupt_gzip(tmp_path):
    packed = gzip.compress(idx.encode(np.ones((50, 28, 28), np.uint8)))
    path = tmp_path / "x.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(idx.IdxError, match="corrupt gzip"):
        idx.read(path)


def test_encode_rejects_unsupported():
    with pytest.raises(ValueError, match="IDX stores"):
        idx.encode(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="IDX stores"):
        idx.encode(np.zeros((1, 1, 1, 1, 1), dtype=np.uint8))


def test_sha256(tmp_path):
    import hashlib

    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)
    assert idx.sha256(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
