"""validate() rejects each kind of bad data with a message naming it; duplicates() finds exact train/test
copies; normalization_stats() equals the numpy reference on the training split."""

import numpy as np
import pytest
import torch

from hwr.data import clean


def _data(n=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 3
    return x, y


def _poke(x, i, value):
    f = x.float() / 255
    f[i, 0, 5, 5] = value
    return f


def test_validate_accepts_good_data():
    x, y = _data()
    clean.validate(x, y, 3, name="ok")
    clean.validate(x.float() / 255, y, 3)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda x, y: (_poke(x, 2, float("nan")), y), "NaN/inf pixel.*first in image 2"),
        (lambda x, y: (_poke(x, 4, float("inf")), y), "NaN/inf pixel.*first in image 4"),
        (lambda x, y: (x.float() / 255 * 2, y), r"\[0, 1\]"),
        (lambda x, y: (x.float() / 255 - 0.5, y), r"\[0, 1\]"),
        (lambda x, y: (x[:, 0], y), r"\(N, C, H, W\)"),
        (lambda x, y: (x.int(), y), "uint8 or float"),
        (lambda x, y: (x[:0], y[:0]), "no images"),
        (lambda x, y: (x, y.int()), "int64"),
        (lambda x, y: (x, y[:-1]), "do not match 6 images"),
        (lambda x, y: (x, y + 1), "label 3 is outside the class set"),
        (lambda x, y: (x, y - 1), "label -1 is outside the class set"),
        (lambda x, y: (x.numpy(), y), "must be tensors"),
    ],
)
def test_validate_errors(mutate, match):
    x, y = mutate(*_data())
    with pytest.raises(ValueError, match=match) as e:
        clean.validate(x, y, 3, name="mnist train")
    assert str(e.value).startswith("mnist train: ")


def test_validate_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        clean.validate(*_data(), 0)


def test_duplicates():
    x, _ = _data(10)
    test = torch.cat([x[[3, 7]], torch.zeros(1, 1, 28, 28, dtype=torch.uint8), x[[3]]])
    test[2, 0, 0, 0] = 1  # not in train
    assert clean.duplicates(x, test).tolist() == [0, 1, 3]
    near = x[[5]].clone()
    near[0, 0, 27, 27] ^= 1  # one pixel differs: not a duplicate
    assert clean.duplicates(x, near).tolist() == []
    with pytest.raises(ValueError, match="image shapes differ"):
        clean.duplicates(x, x[:, :, :14])


def test_normalization_stats_matches_numpy():
    x, _ = _data(50)
    ref = x.numpy().astype(np.float64) / 255.0
    mean, std = clean.normalization_stats(x)
    assert mean == pytest.approx(ref.mean(), abs=1e-12) and std == pytest.approx(ref.std(), abs=1e-12)
    mean_f, std_f = clean.normalization_stats(x.float() / 255)
    assert mean_f == pytest.approx(mean, abs=1e-7) and std_f == pytest.approx(std, abs=1e-7)
    with pytest.raises(ValueError, match="constant"):
        clean.normalization_stats(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        clean.normalization_stats(torch.zeros(0, 1, 4, 4, dtype=torch.uint8))
