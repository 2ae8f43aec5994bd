"""hwr.data.strings: keyed determinism, masks and widths, the height normalisation, and no digit crossing splits."""

import pytest
import torch
import torch.nn.functional as F

from hwr import random
from hwr.data import sources, splits
from hwr.data import strings as st

SPEC = st.StringSpec()


@pytest.fixture(scope="module")
def mnist():
    return sources.load("mnist")


@pytest.fixture(scope="module")
def pools(mnist):
    return st.pools(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels)


def test_pools_follow_the_experiment_split_and_never_overlap(mnist, pools):
    tr, va = splits.stratified_split(random.key(splits.SPLIT_SEED), mnist.train_labels, 0.1)
    assert torch.equal(pools["train"].index, tr) and torch.equal(pools["val"].index, va)
    assert not set(tr.tolist()) & set(va.tolist())
    assert len(pools["train"].labels) + len(pools["val"].labels) == 60_000
    assert len(pools["test"].labels) == 10_000
    assert torch.equal(pools["train"].images, mnist.train_images[tr])


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_strings_use_only_their_own_split(pools, split):
    s = st.render(random.key(3), pools[split], 300, SPEC)
    used = s.digits[s.digits != st.PAD]
    assert len(used) == int(s.lengths.sum())
    source = set(pools[split].index[used].tolist())
    others = {"train": {"val"}, "val": {"train"}, "test": set()}[split]
    for other in others:
        assert not source & set(pools[other].index.tolist())
    # the targets are the labels of exactly those digits
    inside = s.digits != st.PAD
    assert torch.equal(s.targets[inside], pools[split].labels[s.digits[inside]])
    assert (s.targets[~inside] == st.PAD).all()


def test_determinism_by_key_and_chunk_independence(pools):
    a = st.render(random.key(0), pools["train"], 40, SPEC)
    b = st.render(random.key(0), pools["train"], 40, SPEC, chunk=7)
    c = st.render(random.key(1), pools["train"], 40, SPEC)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.images, c.images)
    torch.manual_seed(123)  # the global RNG plays no part
    d = st.render(random.key(0), pools["train"], 40, SPEC)
    assert torch.equal(a.images, d.images)
    e = st.fixed_set(pools["test"], 16, SPEC)
    assert torch.equal(e.images, st.fixed_set(pools["test"], 16, SPEC).images)


def test_shapes_lengths_widths_and_masks(pools):
    s = st.render(random.key(5), pools["train"], 200, SPEC)
    assert s.images.dtype == torch.uint8 and s.images.shape == (200, 1, 32, 160)
    assert s.targets.shape == (200, 8) and s.targets.dtype == torch.int64
    assert int(s.lengths.min()) >= 1 and int(s.lengths.max()) <= 8 and len(set(s.lengths.tolist())) == 8
    mask = st.width_mask(s.widths, SPEC.width)  # (N, W)
    cols = s.images[:, 0].amax(1) > int(st.INK * 255)  # (N, W) columns holding ink
    assert not (cols & ~mask).any(), "ink beyond a string's content width"
    faint = s.images[:, 0].amax(1) > 0  # antialiased edges reach at most 2 px further
    assert not (faint & ~st.width_mask(s.widths + 2, SPEC.width)).any()
    last_ink = torch.where(cols, torch.arange(160), -1).amax(1)
    assert ((s.widths - 1 - last_ink) <= SPEC.margin[1] + 1).all()  # the content ends with the right margin
    balanced = st.render(random.key(5), pools["val"], 80, SPEC, balanced=True)
    assert torch.bincount(balanced.lengths, minlength=9)[1:].tolist() == [10] * 8


def test_height_normalisation_matches_the_spec(pools):
    """The ink box of every string is ink_height tall and centred: what hwr predict does to real images."""
    s = st.render(random.key(6), pools["test"], 100, SPEC)
    rows = s.images[:, 0].amax(2) > int(st.INK * 255)  # (N, H)
    ar = torch.arange(32)
    top = torch.where(rows, ar, 99).amin(1)
    bottom = torch.where(rows, ar, -1).amax(1)
    height = (bottom - top + 1).float()  # resampling and dilated strokes bleed about half a pixel either side
    assert abs(float(height.mean()) - (SPEC.ink_height + st.BLEED)) < 0.3
    assert (height - SPEC.ink_height - st.BLEED).abs().max() <= 2.0, height
    centre = (top + bottom + 1).float() / 2
    assert (centre - 16).abs().max() <= 1.5


def test_stroke_and_gaps_change_the_strings(pools):
    thin = st.render(random.key(7), pools["train"], 50, st.StringSpec(stroke=0.0))
    thick = st.render(random.key(7), pools["train"], 50, st.StringSpec(stroke=1.0))
    assert not torch.equal(thin.images, thick.images)
    tight = st.render(random.key(8), pools["train"], 50, st.StringSpec(gap=(-3.0, -3.0), stretch=0.0))
    wide = st.render(random.key(8), pools["train"], 50, st.StringSpec(gap=(8.0, 8.0), stretch=0.0))
    assert (tight.widths <= wide.widths).all() and (tight.widths < wide.widths).float().mean() > 0.8


def test_window_grid_is_a_slice_of_affine_grid():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    x0 = torch.tensor([0, 3, 10, 17, 40])
    full = F.affine_grid(theta, [5, 1, 32, 64], align_corners=False)
    win = st._window_grid(theta, x0, 32, 64, 24)  # columns past the canvas extend the same grid
    padded = F.affine_grid(theta, [5, 1, 32, 128], align_corners=False)  # only its shape matters here
    del padded
    for k in range(5):
        hi = min(int(x0[k]) + 24, 64)
        torch.testing.assert_close(win[k, :, : hi - int(x0[k])], full[k, :, int(x0[k]) : hi], atol=1e-5, rtol=0)


def test_bad_specs_and_pools():
    with pytest.raises(ValueError, match="min_length"):
        st.StringSpec(min_length=0)
    with pytest.raises(ValueError, match="ink_height"):
        st.StringSpec(ink_height=40)
    with pytest.raises(ValueError, match="cannot hold"):
        st.StringSpec(width=40, max_length=8)
    with pytest.raises(ValueError, match="uint8"):
        st.digit_pool(torch.zeros(3, 1, 28, 28), torch.zeros(3, dtype=torch.int64))
