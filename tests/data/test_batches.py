"""Batches: fixed shapes, keyed order, every image exactly once per epoch, padding marked by the mask."""

import pytest
import torch

from hwr import random
from hwr.data.batches import Batch, batches, num_batches, to_float


def _data(n=103):
    x = torch.arange(n, dtype=torch.int64).view(n, 1, 1, 1).expand(n, 1, 2, 2).to(torch.uint8).contiguous()
    return x, torch.arange(n)  # image i holds the value i, label i


def test_num_batches():
    assert num_batches(103, 10, True) == 10 and num_batches(103, 10, False) == 11
    assert num_batches(100, 10, False) == 10 and num_batches(5, 10, True) == 0
    with pytest.raises(ValueError, match="batch_size"):
        num_batches(10, 0, True)


def test_drop_last_fixed_shape_keyed_permutation():
    x, y = _data()
    bs = batches(random.key(0), x, y, 10)
    assert len(bs) == 10 and all(isinstance(b, Batch) for b in bs)
    assert {tuple(b.images.shape) for b in bs} == {(10, 1, 2, 2)} and {b.labels.shape for b in bs} == {(10,)}
    assert all(b.mask.all() for b in bs)
    seen = torch.cat([b.labels for b in bs])
    assert len(torch.unique(seen)) == 100  # each at most once, 3 dropped
    assert all(torch.equal(b.images[:, 0, 0, 0].long(), b.labels) for b in bs)  # images and labels stay paired
    again = batches(random.key(0), x, y, 10)
    other = batches(random.key(1), x, y, 10)
    assert all(torch.equal(a.labels, b.labels) for a, b in zip(bs, again))
    assert not torch.equal(seen, torch.cat([b.labels for b in other]))
    assert not torch.equal(seen, torch.arange(100))  # shuffled


def test_in_order_and_padding_mask():
    x, y = _data()
    for bs in (
        batches(None, x, y, 10, drop_last=False),
        batches(random.key(5), x, y, 10, shuffle=False, drop_last=False),
    ):
        assert len(bs) == 11 and {tuple(b.images.shape) for b in bs} == {(10, 1, 2, 2)}
        assert torch.equal(torch.cat([b.labels[b.mask] for b in bs]), torch.arange(103))
        last = bs[-1]
        assert last.mask.tolist() == [True] * 3 + [False] * 7
        assert last.labels[3:].tolist() == [0] * 7  # padding repeats image 0
    shuffled = batches(random.key(2), x, y, 10, drop_last=False)
    assert torch.equal(torch.sort(torch.cat([b.labels[b.mask] for b in shuffled])).values, torch.arange(103))
    assert sum(int(b.mask.sum()) for b in shuffled) == 103


def test_edges_and_purity():
    x, y = _data(7)
    x0, y0 = x.clone(), y.clone()
    assert batches(random.key(0), x, y, 10) == []
    padded = batches(random.key(0), x, y, 10, drop_last=False)
    assert len(padded) == 1 and int(padded[0].mask.sum()) == 7
    assert torch.equal(x, x0) and torch.equal(y, y0)
    with pytest.raises(ValueError, match="do not match"):
        batches(None, x, y[:-1], 2)


def test_to_float():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert to_float(None, x).tolist() == [[[[0.0, 1.0]]]]
    f = torch.rand(1, 1, 2, 2)
    assert to_float(None, f) is f


def test_sampled_batches_follow_the_class_power():
    from hwr.data.batches import sampled_batches

    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    images = torch.zeros(1000, 1, 1, 1, dtype=torch.uint8)
    for power, want in ((0.0, [1 / 3] * 3), (0.5, [30 / 42.6, 9.49 / 42.6, 3.16 / 42.6]), (1.0, [0.9, 0.09, 0.01])):
        bs = sampled_batches(random.key(0), images, labels, 100, power=power, count=300)
        assert len(bs) == 300 and all(b.images.shape == (100, 1, 1, 1) and bool(b.mask.all()) for b in bs)
        ys = torch.cat([b.labels for b in bs])
        share = torch.bincount(ys, minlength=3).double() / ys.numel()
        assert share.tolist() == pytest.approx(want, abs=0.01)
    # one epoch by default; the same key gives the same batches
    assert len(sampled_batches(random.key(1), images, labels, 64, power=0.0)) == 1000 // 64
    a = sampled_batches(random.key(2), images, labels, 32, power=0.5, count=3)
    c = sampled_batches(random.key(2), images, labels, 32, power=0.5, count=3)
    assert all(torch.equal(x.labels, y.labels) and torch.equal(x.images, y.images) for x, y in zip(a, c))
    with pytest.raises(ValueError, match="power"):
        sampled_batches(random.key(0), images, labels, 8, power=2.0)


def test_sampled_batches_keep_images_with_their_labels():
    from hwr.data.batches import sampled_batches

    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    images = (labels * 40 + 7).to(torch.uint8).view(6, 1, 1, 1)  # each image encodes its label
    for b in sampled_batches(random.key(3), images, labels, 4, power=0.0, count=20):
        assert torch.equal(((b.images.flatten().long() - 7) // 40), b.labels)
