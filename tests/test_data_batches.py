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
    for bs in (batches(None, x, y, 10, drop_last=False), batches(random.key(5), x, y, 10, shuffle=False,
                                                                  drop_last=False)):
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
