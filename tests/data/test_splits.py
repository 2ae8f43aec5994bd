"""Keyed index selections: stratified splits, the exponential long-tail profile, balanced subsets."""

import math

import pytest
import torch

from hwr import random
from hwr.data import splits


def _labels(counts):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return y[random.permutation(random.key(99), len(y))]  # shuffled, as real data


def test_stratified_split_is_stratified_and_partitions():
    counts = [100, 50, 20, 7, 2]
    y = _labels(counts)
    tr, va = splits.stratified_split(random.key(0), y, 0.2)
    assert torch.equal(torch.sort(torch.cat([tr, va])).values, torch.arange(len(y)))  # disjoint, complete
    assert splits.class_counts(y[va], 5) == [20, 10, 4, 1, 1]  # round(n * 0.2), at least one each
    assert splits.class_counts(y[tr], 5) == [80, 40, 16, 6, 1]
    assert torch.equal(tr, torch.sort(tr).values) and torch.equal(va, torch.sort(va).values)


def test_stratified_split_is_keyed():
    y = _labels([60, 60, 60])
    a = splits.stratified_split(random.key(1), y, 0.25)
    b = splits.stratified_split(random.key(1), y, 0.25)
    c = splits.stratified_split(random.key(2), y, 0.25)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])
    assert splits.class_counts(y[c[1]], 3) == [15, 15, 15]


def test_stratified_split_edges():
    y = _labels([10, 1])
    tr, va = splits.stratified_split(random.key(0), y, 0.0)
    assert len(va) == 0 and len(tr) == 11
    tr, va = splits.stratified_split(random.key(0), y, 0.5)
    assert splits.class_counts(y[va], 2) == [5, 0]  # a single-image class stays in train
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            splits.stratified_split(random.key(0), y, bad)


def test_long_tail_counts_follow_the_profile_exactly():
    counts = [125, 129, 124, 130, 128, 129, 128, 126, 121, 127]
    got = splits.long_tail_counts(counts, 100)
    want = [math.floor(125 * 100 ** (-c / 9) + 1e-9) for c in range(10)]
    assert got == want == [125, 74, 44, 26, 16, 9, 5, 3, 2, 1]
    assert got[0] == counts[0]  # the head keeps all
    assert splits.long_tail_counts([1000] * 3, 10) == [1000, 316, 100]
    assert splits.long_tail_counts([1000] * 5, 1) == [1000] * 5
    assert splits.long_tail_counts([1000, 10, 1000], 2) == [1000, 10, 500]  # capped by what exists
    assert splits.long_tail_counts([50, 50], 1000) == [50, 1]  # at least one
    with pytest.raises(ValueError, match="imbalance_ratio"):
        splits.long_tail_counts([5, 5], 0.5)
    with pytest.raises(ValueError, match="at least one"):
        splits.long_tail_counts([5, 0], 10)


def test_long_tail_indices():
    y = _labels([200] * 10)
    idx = splits.long_tail_indices(random.key(3), y, 100.0, 10)
    assert splits.class_counts(y[idx], 10) == splits.long_tail_counts([200] * 10, 100)
    assert len(torch.unique(idx)) == len(idx)
    assert torch.equal(idx, splits.long_tail_indices(random.key(3), y, 100.0, 10))
    assert not torch.equal(idx, splits.long_tail_indices(random.key(4), y, 100.0, 10))
    with pytest.raises(ValueError, match="num_classes"):
        splits.long_tail_indices(random.key(3), y, 100.0, 5)


def test_balanced_indices():
    y = _labels([30, 12, 50])
    idx = splits.balanced_indices(random.key(0), y)
    assert splits.class_counts(y[idx], 3) == [12, 12, 12]
    idx5 = splits.balanced_indices(random.key(0), y, 5)
    assert splits.class_counts(y[idx5], 3) == [5, 5, 5]
    assert not torch.equal(idx5, splits.balanced_indices(random.key(1), y, 5))
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        splits.balanced_indices(random.key(0), y, 13)


def test_inputs_unchanged_and_label_checks():
    y = _labels([10, 10])
    before = y.clone()
    splits.stratified_split(random.key(0), y, 0.3)
    splits.balanced_indices(random.key(0), y, 3)
    assert torch.equal(y, before)
    with pytest.raises(ValueError, match="1-D integer"):
        splits.balanced_indices(random.key(0), y.float(), 1)
    with pytest.raises(ValueError, match="1-D integer"):
        splits.stratified_split(random.key(0), y.view(2, 10), 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        splits.long_tail_indices(random.key(0), y - 1, 10.0, 2)


def test_stratified_folds_partition_every_class_evenly():
    labels = torch.tensor([0] * 23 + [1] * 11 + [2] * 3)
    fold = splits.stratified_folds(random.key(0), labels, 5)
    assert fold.shape == labels.shape and set(fold.tolist()) <= set(range(5))
    for c, n in ((0, 23), (1, 11)):
        per_fold = torch.bincount(fold[labels == c], minlength=5)
        assert int(per_fold.max() - per_fold.min()) <= 1 and int(per_fold.sum()) == n
    assert torch.equal(fold, splits.stratified_folds(random.key(0), labels, 5))
    assert not torch.equal(fold, splits.stratified_folds(random.key(1), labels, 5))
    with pytest.raises(ValueError, match="folds"):
        splits.stratified_folds(random.key(0), labels, 1)


def test_long_tail_order_picks_the_head():
    labels = torch.arange(4).repeat_interleave(50)
    idx = splits.long_tail_indices(random.key(0), labels, 10, 4, order=[2, 0, 3, 1])
    counts = torch.bincount(labels[idx], minlength=4).tolist()
    assert counts[2] == 50 and counts[1] == 5 and counts[0] > counts[3] > counts[1]
    assert splits.class_order(None, 4) == [0, 1, 2, 3]
    perm = splits.class_order(random.key(3), 10)
    assert sorted(perm) == list(range(10)) and perm != list(range(10))
    with pytest.raises(ValueError, match="permutation"):
        splits.long_tail_indices(random.key(0), labels, 10, 4, order=[0, 0, 1, 2])
