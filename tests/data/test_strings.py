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


# ---------------------------------------------------------------------------------------------- separators

FORMS = st.StringSpec(width=192, max_length=10, separators="-.,", separator_rate=0.3)


def test_separators_classes_places_and_determinism(pools):
    s = st.render(random.key(9), pools["train"], 150, FORMS)
    assert s.images.shape == (150, 1, 32, 192) and FORMS.alphabet == "0123456789-.,"
    inside = torch.arange(10)[None, :] < s.lengths[:, None]
    assert (s.targets[inside] >= 0).all() and (s.targets[inside] <= 12).all() and (s.targets[~inside] == st.PAD).all()
    sep = s.targets >= 10
    assert {10, 11, 12} <= set(s.targets[sep].tolist())  # every separator appears
    assert not sep[:, 0].any() and not (sep & (torch.arange(10)[None, :] == s.lengths[:, None] - 1)).any()
    assert not (sep[:, 1:] & sep[:, :-1]).any()  # never two in a row
    assert 0.1 < float(sep.sum()) / float((s.lengths - 2).clamp_min(0).sum()) < 0.3  # rate 0.3, thinned by the rule
    # digits: the pool rows of the digit slots only, PAD on separators
    digit = inside & ~sep
    assert (s.digits[~digit] == st.PAD).all()
    assert torch.equal(s.targets[digit], pools["train"].labels[s.digits[digit]])
    # keyed: the same key, any chunk, gives the same strings; the global RNG plays no part
    torch.manual_seed(5)
    again = st.render(random.key(9), pools["train"], 150, FORMS, chunk=37)
    assert all(torch.equal(a, b) for a, b in zip(s, again))
    assert not torch.equal(st.render(random.key(10), pools["train"], 20, FORMS).targets, s.targets[:20])


def test_separator_classes_without_separators_render_as_digits(pools):
    """Separators at rate 0 only add classes: the strings are those of the digit-only spec, to the bit."""
    plain = st.render(random.key(11), pools["test"], 60, st.StringSpec())
    with_classes = st.render(random.key(11), pools["test"], 60, st.StringSpec(separators="-.,"))
    assert all(torch.equal(a, b) for a, b in zip(plain, with_classes))


def test_separator_glyphs_are_drawn_where_intended():
    g = st.separator_glyphs(random.key(0), "-" * 20 + "." * 20 + "," * 20)
    assert g.dtype == torch.uint8 and g.shape == (60, 1, 28, 28)
    assert torch.equal(g, st.separator_glyphs(random.key(0), "-" * 20 + "." * 20 + "," * 20))
    ink = g[:, 0].float() / 255
    rows = torch.arange(28, dtype=torch.float32) - 13.5  # from the field centre, y down; MNIST's baseline is +10
    cy = (ink.sum(2) * rows).sum(1) / ink.sum((1, 2))
    on = ink > st.INK
    height = on.any(2).sum(1)
    width = on.any(1).sum(1)
    hyphen, point, comma = slice(0, 20), slice(20, 40), slice(40, 60)
    assert (cy[hyphen].abs() <= 2.0).all() and (width[hyphen] > 2 * height[hyphen]).all()  # mid-height, flat
    assert ((cy[point] > 7.0) & (cy[point] < 10.5)).all() and (width[point] <= 6).all()  # a dot on the baseline
    lowest = torch.where(on.any(2), rows, -99.0).amax(1)
    assert (lowest[comma] > 10.0).all() and (height[comma] > height[point]).all()  # a tail below the baseline
    with pytest.raises(ValueError, match="separator_glyphs"):
        st.separator_glyphs(random.key(0), "-/")


def test_rendered_separators_sit_at_their_heights():
    """Between two upright bars (a pool of one 20-pixel bar), with no pose jitter: a hyphen at mid-height, a
    point on the bars' baseline, a comma's tail below it."""
    bar = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    bar[..., 4:24, 12:16] = 255
    pool = st.digit_pool(bar, torch.zeros(1, dtype=torch.int64))
    still = {"rotation": 0.0, "slant": 0.0, "slant_jitter": 0.0, "scale": 0.0, "baseline": 0.0, "stroke": 0.0}
    spec = st.StringSpec(**still, gap=(3.0, 3.0), gap_jitter=0.0, stretch=0.0, max_length=3, separators="-.,",
                         formats=("d-d", "d.d", "d,d"))  # fmt: skip
    s = st.render(random.key(0), pool, 30, spec, balanced=True)
    assert s.targets[:, 1].tolist() == [10, 11, 12] * 10 and (s.digits[:, 1] == st.PAD).all()
    for i in range(30):
        on = s.images[i, 0] > int(st.INK * 255)  # (H, W)
        cols = on.sum(0)
        bars = (cols >= 0.8 * cols.max()).nonzero().squeeze(1)
        mid = bars.float().mean()
        left, right = int(bars[bars < mid].max()), int(bars[bars > mid].min())
        top, bottom = (int(r) for r in on[:, bars[0]].nonzero().squeeze(1)[[0, -1]])
        between = s.images[i, 0, :, left + 1 : right].float().sum(1)  # (H,) the separator's ink by row
        cy = float((between * torch.arange(32)).sum() / between.sum())
        rel = (cy - top) / (bottom - top)  # 0 the bars' top, 1 their bottom
        lowest = int(on[:, left + 1 : right].any(1).nonzero().max())
        kind = "-.,"[i % 3]
        if kind == "-":
            assert 0.35 < rel < 0.65, (i, rel)
        else:
            assert rel > 0.75 and (lowest <= bottom + 2 if kind == "." else lowest >= bottom + 1), (i, kind, rel)


def test_formats_shape_every_string():
    spec = st.StringSpec(width=192, max_length=10, separators="-.,", formats=("ddddd-dddd", "d,ddd.dd"))
    pool = st.digit_pool(torch.full((4, 1, 28, 28), 200, dtype=torch.uint8), torch.arange(4))
    s = st.render(random.key(1), pool, 40, spec)
    text = ["".join(spec.alphabet[t] for t in row[: int(n)].tolist()) for row, n in zip(s.targets, s.lengths)]
    shapes = {"".join("d" if c.isdigit() else c for c in t) for t in text}
    assert shapes == {"ddddd-dddd", "d,ddd.dd"}
    b = st.render(random.key(1), pool, 4, spec, balanced=True)
    assert b.lengths.tolist() == [10, 8, 10, 8]


def test_bad_separator_specs():
    with pytest.raises(ValueError, match="separators must be distinct characters"):
        st.StringSpec(separators="-/")
    with pytest.raises(ValueError, match="separators must be distinct characters"):
        st.StringSpec(separators="--")
    with pytest.raises(ValueError, match="needs separators"):
        st.StringSpec(separator_rate=0.2)
    with pytest.raises(ValueError, match="separator_rate must be in"):
        st.StringSpec(separators="-", separator_rate=0.9)
    with pytest.raises(ValueError, match="format 'ddddd-dddd'"):
        st.StringSpec(formats=("ddddd-dddd",))  # '-' is not among the separators
    with pytest.raises(ValueError, match="max_length"):
        st.StringSpec(separators="-", formats=("ddddd-dddd",))  # 10 > max_length 8
