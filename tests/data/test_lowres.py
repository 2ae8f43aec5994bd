"""Low-resolution rescans (``hwr.data.lowres``, ``mnist:lowres=SHARE``): what one rescan does to a digit, which
training images a share rescans, the cache, the data set name's parameter and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwr.data import catalog, idx, lowres, sources
from hwr.data.catalog import Dataset, DatasetSpecError
from hwr.data.digits import mnist_style


def _ring(radius: float = 7.0, width: float = 2.0) -> torch.Tensor:
    """A zero drawn as a ring, centred like an MNIST digit: uint8 (1, 28, 28)."""
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    r = ((yy - 14) ** 2 / 1.4 + (xx - 14) ** 2).sqrt()  # a tall ellipse, as a handwritten 0
    ink = (1 - (r - radius).abs() / width).clamp(0, 1)
    return (ink * 255).round().to(torch.uint8)[None]


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1])


def test_a_rescan_is_the_digit_brought_down_to_size_pixels_and_back():
    digit = _ring()
    out = lowres.rescan(digit, 8)
    assert out.shape == (1, 28, 28) and out.dtype == torch.uint8 and not torch.equal(out, digit)
    rows = (out[0] > 0).any(1).nonzero()
    assert int(rows[-1] - rows[0]) + 1 in (20, 21)  # back in MNIST's 20-pixel box (bicubic's ringing: one more)
    # by hand: the ink's box at 8 pixels tall, area-averaged, 16 grey levels, then mnist_style
    x = digit[0].float() / 255
    ink = x > lowres.INK * x.max()
    r, c = ink.any(1).nonzero().squeeze(1), ink.any(0).nonzero().squeeze(1)
    crop = x[r[0] : r[-1] + 1, c[0] : c[-1] + 1]
    h, w = crop.shape
    small = F.interpolate(crop[None, None], size=(8, round(w * 8 / h)), mode="area")[0, 0]
    assert torch.equal(out, mnist_style((small * 16).round() / 16))
    # coarser scans lose more of the shape, and every one is still the same digit's shape
    fine, coarse = _corr(lowres.rescan(digit, 20), digit), _corr(lowres.rescan(digit, 7), digit)
    assert 0.6 < coarse < fine and fine > 0.9
    assert torch.equal(digit, _ring())  # the input is not changed


def test_rescan_refuses_what_it_cannot_rescan_and_keeps_a_blank_image():
    blank = torch.zeros(1, 28, 28, dtype=torch.uint8)
    assert torch.equal(lowres.rescan(blank, 8), blank)
    with pytest.raises(ValueError, match="uint8 \\(1, 28, 28\\)"):
        lowres.rescan(_ring().float(), 8)
    with pytest.raises(ValueError, match="uint8 \\(1, 28, 28\\)"):
        lowres.rescan(_ring()[0], 8)
    with pytest.raises(ValueError, match="at least 2 pixels"):
        lowres.rescan(_ring(), 1)


def _dataset(n: int = 60) -> Dataset:
    g = torch.Generator().manual_seed(0)
    shifts = torch.randint(-3, 4, (n, 2), generator=g)
    train = torch.stack([torch.roll(_ring(5 + i % 4), tuple(s.tolist()), (1, 2)) for i, s in enumerate(shifts)])
    test = train[:10].clone()
    labels = torch.arange(n) % 10
    return Dataset("mnist", train, labels, test, labels[:10].clone(), catalog.DIGITS)


def test_a_share_rescans_that_share_of_the_training_images_by_a_fixed_key(tmp_path):
    ds = _dataset(400)
    before = ds.train_images.clone()
    out = lowres.rescanned(ds, 0.5, None)
    changed = (out.train_images != ds.train_images).flatten(1).any(1)
    assert 0.4 < changed.float().mean() < 0.6  # each image with probability 0.5
    assert torch.equal(ds.train_images, before)  # pure: the input's tensors are not written
    assert torch.equal(out.test_images, ds.test_images) and torch.equal(out.train_labels, ds.train_labels)
    again = lowres.rescanned(ds, 0.5, None)
    assert torch.equal(again.train_images, out.train_images)  # the same images at the same sizes every time
    more = (lowres.rescanned(ds, 0.8, None).train_images != ds.train_images).flatten(1).any(1)
    assert more.sum() > changed.sum()
    assert lowres.rescanned(ds, 0.0, None) is ds
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        lowres.rescanned(ds, 1.5, None)


def test_the_rescans_are_cached_and_made_again_when_their_code_changes(tmp_path, monkeypatch):
    ds, cache = _dataset(), tmp_path / "mnist-lowres-0.5.pt"
    first = lowres.rescanned(ds, 0.5, cache)
    assert cache.is_file()

    def refuse(*_):
        raise AssertionError("converted again although the cache holds the rescans")

    with monkeypatch.context() as m:
        m.setattr(lowres, "_convert", refuse)
        assert torch.equal(lowres.rescanned(ds, 0.5, cache).train_images, first.train_images)
    monkeypatch.setattr(lowres, "_version", lambda: "another version of the code")
    calls = []
    real = lowres._convert
    monkeypatch.setattr(lowres, "_convert", lambda *a: calls.append(1) or real(*a))
    assert torch.equal(lowres.rescanned(ds, 0.5, cache).train_images, first.train_images) and calls == [1]
    cache.write_bytes(b"not a torch file")  # a corrupt cache is converted again, not an error
    assert torch.equal(lowres.rescanned(ds, 0.5, cache).train_images, first.train_images) and calls == [1, 1]


def test_lowres_is_a_parameter_of_the_handwriting_sets_only():
    assert catalog.parse_name("mnist:lowres=0.5") == ("mnist", {"lowres": 0.5})
    assert catalog.parse_name("emnist-digits")[1] == {"lowres": 0.0}
    with pytest.raises(DatasetSpecError, match="in \\[0, 1\\]"):
        catalog.parse_name("mnist:lowres=2")
    with pytest.raises(DatasetSpecError, match="not a parameter of fashion-mnist"):
        catalog.parse_name("fashion-mnist:lowres=0.5")


def test_a_set_loads_with_half_its_training_images_rescanned_and_cached_by_the_root(tmp_path):
    folder, names = catalog.layout("kmnist", tmp_path)
    rings = torch.stack([torch.roll(_ring(4 + i % 5), (i % 5 - 2, i % 3 - 1), (1, 2)) for i in range(80)])
    for name, a in zip(names, [rings[:, 0].numpy(), np.arange(80) % 10, rings[:20, 0].numpy(), np.arange(20) % 10]):
        idx.write(folder / name, np.asarray(a, dtype=np.uint8))
    plain = sources.load("kmnist", tmp_path)
    ds = sources.load("kmnist:lowres=0.5", tmp_path)
    assert ds.name == "kmnist:lowres=0.5" and ds.classes == plain.classes
    assert torch.equal(ds.test_images, plain.test_images)  # only the training split is rescanned
    assert 0 < int((ds.train_images != plain.train_images).flatten(1).any(1).sum()) < 80
    assert (folder.parent / "kmnist-lowres-0.5.pt").is_file()
    assert torch.equal(sources.load("kmnist:lowres=0.5", tmp_path).train_images, ds.train_images)
