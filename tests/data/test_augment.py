"""Augmentation: config validation and the CLI syntax, exact geometry of the affine maps, identity at zero
strength, per-sample and keyed randomness, purity, each transform doing what it says, and the compiled
(fullgraph) transform matching eager without recompiling for a new key or a new batch."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from hwr import random
from hwr.data import augment as A
from hwr.data.batches import batches


def _digits(n=8, h=28, w=28, seed=0):
    """Blobby stroke-like images in [0, 1]: smoothed random noise, thresholded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, h, w, generator=g)
    x = F.avg_pool2d(x, 5, stride=1, padding=2)
    return ((x - 0.5) * 8).clamp(0, 1)


# ------------------------------------------------------------------------------------------ config & parsing


def test_config_defaults_are_identity_and_validated():
    assert A.AugmentConfig().is_identity()
    for field in ("rotation", "translate", "scale", "shear", "elastic_alpha", "erase_prob", "blur"):
        assert not A.AugmentConfig(**{field: 0.1}).is_identity(), field
    assert not A.AugmentConfig(hflip=True).is_identity()
    assert A.AugmentConfig(elastic_sigma=9.0).is_identity()  # sigma alone does nothing
    assert A.AugmentConfig(erase_scale=[0.1, 0.2]).erase_scale == (0.1, 0.2)  # JSON lists become tuples
    bad = [
        dict(rotation=-1),
        dict(rotation=181),
        dict(translate=-0.5),
        dict(scale=1.0),
        dict(shear=90),
        dict(elastic_alpha=-1),
        dict(elastic_sigma=0),
        dict(erase_prob=1.5),
        dict(blur=-0.5),
        dict(blur=9),
        dict(erase_scale=(0.3, 0.2)),
        dict(erase_scale=(0, 0.2)),
        dict(rotation=float("nan")),
        dict(hflip=1),
        dict(rotation="10"),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            A.AugmentConfig(**kwargs)
    with pytest.raises(AttributeError):
        A.AugmentConfig().rotation = 3.0  # frozen


def test_parse_augment_presets_and_overrides():
    assert A.parse_augment("none") == A.AugmentConfig()
    assert A.parse_augment("standard") == A.AugmentConfig(
        rotation=10, translate=2, scale=0.1
    )  # docs/architecture.md, measured facts
    assert A.parse_augment("Light").rotation == 5
    strong = A.parse_augment("strong")
    assert strong.elastic_alpha > 0 and strong.shear > 0 and strong.erase_prob > 0
    assert A.parse_augment("rotation=10,translate=2,scale=0.1,elastic_alpha=8") == A.AugmentConfig(
        rotation=10, translate=2, scale=0.1, elastic_alpha=8
    )
    c = A.parse_augment(" standard , elastic_alpha=34, elastic-sigma=4 ,hflip=true,erase_scale=0.05:0.1")
    assert (c.rotation, c.elastic_alpha, c.elastic_sigma, c.hflip, c.erase_scale) == (10, 34, 4, True, (0.05, 0.1))
    assert A.parse_augment("hflip=off").hflip is False


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("rot=10", "unknown augmentation key 'rot'; valid keys: rotation"),
        ("wild", "unknown augmentation preset 'wild'; choose one of none, light, standard, strong"),
        ("rotation=ten", "rotation='ten' is not a number"),
        ("rotation=1,rotation=2", "given twice"),
        ("rotation=1,standard", "a preset may only come first"),
        ("", "empty augmentation spec"),
        ("rotation=-5", "rotation=-5.0 is out of range"),
        ("hflip=maybe", "use true or false"),
        ("erase_scale=0.1", "use low:high"),
    ],
)
def test_parse_augment_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        A.parse_augment(spec)


# ------------------------------------------------------------------------------------------------ geometry


def _warp(x, angle=0.0, shear=0.0, scale=1.0, tx=0.0, ty=0.0, flip=1.0):
    b, _, h, w = x.shape
    p = [torch.full((b,), float(v)) for v in (angle, shear, scale, tx, ty, flip)]
    theta = A.affine_theta(*p, h=h, w=w)
    return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)


def test_affine_geometry_is_exact_at_pixel_centres():
    x = torch.rand(1, 1, 27, 31)  # odd, non-square: centre pixel (13, 15), the normalisation matters
    ex = dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(_warp(x), x, **ex)
    torch.testing.assert_close(_warp(x, flip=-1)[0, 0], x[0, 0].flip(-1), **ex)
    out = _warp(x, tx=3, ty=-2)  # content moves 3 px right, 2 px up
    torch.testing.assert_close(out[0, 0, 0:25, 3:31], x[0, 0, 2:27, 0:28], **ex)
    assert float(out[0, 0, :, :3].abs().max()) < 1e-5  # uncovered area is background
    rot = _warp(x, angle=math.pi / 2)  # forward map (dx, dy) -> (-dy, dx): right of centre goes below it
    for dy, dx in ((-1, 2), (3, 0), (0, -4), (5, 5)):
        assert float(rot[0, 0, 13 + dx, 15 - dy]) == pytest.approx(float(x[0, 0, 13 + dy, 15 + dx]), abs=1e-5)
    sh = _warp(x, shear=math.pi / 4)  # x-shear by 45 degrees: (dx, dy) -> (dx + dy, dy)
    for dy, dx in ((3, 2), (-2, 1), (4, -6)):
        assert float(sh[0, 0, 13 + dy, 15 + dx + dy]) == pytest.approx(float(x[0, 0, 13 + dy, 15 + dx]), abs=1e-5)
    sq = torch.rand(1, 1, 28, 28)
    big = _warp(sq, scale=3.0)  # zoom about the centre 13.5: output p reads input 13.5 + (p - 13.5) / 3
    for p, q in ((9, 12), (12, 13), (15, 14), (18, 15)):
        assert float(big[0, 0, p, p]) == pytest.approx(float(sq[0, 0, q, q]), abs=1e-5)


# ------------------------------------------------------------------------------------------- the function


def test_identity_at_zero_strength():
    x = _digits()
    assert A.augment(random.key(0), x, A.AugmentConfig()) is x
    tiny = A.AugmentConfig(rotation=1e-7, translate=1e-7, scale=1e-7, shear=1e-7, elastic_alpha=1e-7)
    torch.testing.assert_close(A.augment(random.key(0), x, tiny), x, atol=1e-5, rtol=0)  # the warp path too


def test_keyed_pure_and_shape_preserving():
    cfg = A.parse_augment("strong")
    x = _digits()
    before = x.clone()
    a = A.augment(random.key(1), x, cfg)
    assert torch.equal(a, A.augment(random.key(1), x, cfg))
    assert not torch.allclose(a, A.augment(random.key(2), x, cfg))
    assert torch.equal(x, before)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    odd = _digits(4, 20, 36)
    assert A.augment(random.key(1), odd, cfg).shape == (4, 1, 20, 36)
    with pytest.raises(TypeError, match="float images"):
        A.augment(random.key(0), (x * 255).to(torch.uint8), cfg)


@pytest.mark.parametrize(
    "spec",
    ["rotation=10", "translate=2", "scale=0.1", "shear=10", "elastic_alpha=34", "erase_prob=1", "blur=2", "standard"],
)
def test_per_sample_parameters(spec):
    x = _digits(1).expand(8, 1, 28, 28).contiguous()  # eight copies of one image
    out = A.augment(random.key(3), x, A.parse_augment(spec))
    flat = out.flatten(1)
    diffs = (flat[:, None] - flat[None]).abs().amax(-1)  # (8, 8)
    off_diagonal = diffs[~torch.eye(8, dtype=torch.bool)]
    assert float(off_diagonal.min()) > 1e-5, spec  # every pair got a different transform


def test_hflip_mirrors_about_half_the_samples():
    x = _digits(32)
    out = A.augment(random.key(4), x, A.AugmentConfig(hflip=True))
    flipped = [(o - xi.flip(-1)).abs().max() < 1e-5 for o, xi in zip(out, x)]
    kept = [(o - xi).abs().max() < 1e-5 for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 8 <= sum(flipped) <= 24


def test_translate_moves_the_centre_of_mass_within_bounds():
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 11:17, 11:17] = 1.0  # a square in the middle: nothing leaves the field
    out = A.augment(random.key(5), x, A.AugmentConfig(translate=3.0))
    i = torch.arange(28.0)
    com = lambda t: torch.stack([(t.sum(3) * i).sum(-1), (t.sum(2) * i).sum(-1)], -1)[:, 0] / t.sum((2, 3))
    shift = com(out) - com(x)  # (16, 2)
    assert float(shift.abs().max()) <= 3.0 + 1e-4 and float(shift.abs().max()) > 1.0
    torch.testing.assert_close(out.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-3, rtol=0)  # mass is kept


def test_elastic_field_follows_simard():
    b, h, w, alpha, sigma = 64, 28, 28, 34.0, 4.0
    u = random.uniform(random.key(6), (2 * b, h, w))
    grid = A._elastic(u, b, h, w, A.AugmentConfig(elastic_alpha=alpha, elastic_sigma=sigma))  # (B, H, W, 2)
    d = grid * torch.tensor([w / 2, h / 2])  # back to pixels
    inner = d[:, 12:16, 12:16]  # away from the zero-padded border
    rms = float(inner.pow(2).mean().sqrt())
    expected = alpha * (1 / math.sqrt(3)) / (2 * math.sqrt(math.pi) * sigma)  # uniform(-1,1) std * sum(g^2)^0.5
    assert 0.75 * expected < rms < 1.25 * expected
    g = A._gaussian_band(sigma, h, u.device)
    k = g[14, 14 - 12 : 14 + 13]  # the 1-D kernel: 25 taps, symmetric, normalised
    ref = F.conv2d(
        F.conv2d(u[:, None] * 2 - 1, k.view(1, 1, -1, 1), padding=(12, 0)), k.view(1, 1, 1, -1), padding=(0, 12)
    )  # the zero-padded separable convolution the band matrices stand for
    smoothed = grid[..., 0] * (w / 2) / alpha  # x field of sample s is row 2s
    torch.testing.assert_close(smoothed, ref[0::2, 0], atol=1e-6, rtol=0)
    dx = d[..., 0]
    neighbour = torch.corrcoef(torch.stack([dx[:, 8:20, 8:19].flatten(), dx[:, 8:20, 9:20].flatten()]))[0, 1]
    assert float(neighbour) > 0.95  # smooth: adjacent displacements nearly equal
    x = F.pad(_digits(8, 20, 20), (4, 4, 4, 4))
    out = A.augment(random.key(6), x, A.AugmentConfig(elastic_alpha=alpha, elastic_sigma=sigma))
    assert bool(((out - x).abs().flatten(1).amax(1) > 0.1).all())
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_random_erasing_blanks_one_rectangle():
    x = torch.ones(64, 1, 28, 28)
    lo, hi = 0.02, 0.15
    out = A.augment(random.key(7), x, A.AugmentConfig(erase_prob=0.5, erase_scale=(lo, hi)))
    holes = out[:, 0] == 0  # (64, 28, 28)
    erased = holes.flatten(1).any(1)
    assert 16 <= int(erased.sum()) <= 48
    for hole in holes[erased]:
        rows, cols = hole.any(1), hole.any(0)
        assert torch.equal(hole, rows[:, None] & cols[None, :])  # a rectangle
        area = int(hole.sum()) / 784
        assert lo * 0.5 <= area <= hi * 1.6  # pixel-centre rounding of a rectangle of that area
    assert bool((out[~erased] == 1).all())


def test_blur_is_a_gaussian_of_at_most_blur_pixels_with_the_peak_kept():
    x = torch.zeros(64, 1, 29, 29)
    x[:, 0, 14, 14] = 0.8  # a point: the output is the kernel itself, scaled to the point's peak
    out = A.augment(random.key(5), x, A.AugmentConfig(blur=2.0))
    torch.testing.assert_close(out.amax((1, 2, 3)), torch.full((64,), 0.8))  # the peak restored
    profile = out[:, 0, 14] / out[:, 0, 14].sum(1, keepdim=True)  # (64, 29): the row through the point
    t = torch.arange(29.0) - 14
    sigma = (profile * t * t).sum(1).sqrt()
    assert float(sigma.max()) <= 2.0 + 1e-3 and float(sigma.min()) < 0.5  # uniform in [0, 2]
    assert 0.7 < float(sigma.median()) < 1.3
    torch.testing.assert_close(out[:, 0].transpose(1, 2), out[:, 0])  # isotropic: the same along both axes


def test_blur_draws_last_so_the_other_transforms_keep_their_numbers():
    x = _digits(6)
    base = A.AugmentConfig(rotation=10, elastic_alpha=8, erase_prob=0.0)
    both = A.augment(random.key(4), x, A.AugmentConfig(rotation=10, elastic_alpha=8, blur=1.5))
    u = random.uniform(random.key(4), (12 * 6 + 2 * 6 * 28 * 28,))
    expected = A._blur(u[11 * 6 + 2 * 6 * 28 * 28 :], A.augment(random.key(4), x, base), {"blur": 1.5})
    torch.testing.assert_close(both, expected)


def test_affine_grid_is_torchs_bit_for_bit_and_batches_under_vmap():
    for b, h, w in [(8, 28, 28), (3, 20, 36), (4, 32, 128)]:
        theta = torch.randn(b, 2, 3, generator=torch.Generator().manual_seed(b))
        assert torch.equal(A._affine_grid(theta, h, w), F.affine_grid(theta, [b, 1, h, w], align_corners=False))
    thetas = torch.randn(5, 8, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "batching rule not implemented" fallback
        mapped = torch.func.vmap(lambda t: A._affine_grid(t, 28, 28))(thetas)
    assert torch.equal(mapped, torch.stack([A._affine_grid(t, 28, 28) for t in thetas]))


def test_make_transform():
    x = (torch.rand(4, 1, 28, 28) * 255).to(torch.uint8)
    plain = A.make_transform(None, 0.1307, 0.3081)
    torch.testing.assert_close(plain(None, x), (x.float() / 255 - 0.1307) / 0.3081, atol=0, rtol=0)
    assert torch.equal(A.make_transform(A.AugmentConfig(), 0.1307, 0.3081)(random.key(0), x), plain(None, x))
    aug = A.make_transform(A.parse_augment("standard"), 0.1307, 0.3081)
    y = aug(random.key(0), x)
    assert y.dtype == torch.float32 and y.shape == x.shape and not torch.allclose(y, plain(None, x))
    torch.testing.assert_close(
        y, (A.augment(random.key(0), x.float() / 255, A.parse_augment("standard")) - 0.1307) / 0.3081
    )
    with pytest.raises(ValueError, match="std must be > 0"):
        A.make_transform(None, 0.5, 0.0)


# ------------------------------------------------------------------------------------------------ compile

FULL = A.AugmentConfig(
    rotation=12,
    translate=2,
    scale=0.1,
    shear=8,
    elastic_alpha=34,
    elastic_sigma=4,
    erase_prob=0.5,
    hflip=True,
    blur=1.5,
)


@pytest.fixture(scope="module")
def compiled():
    """The full transform (uint8 -> augment -> normalise) compiled once, whole-graph."""
    torch._dynamo.reset()
    transform = A.make_transform(FULL, 0.1307, 0.3081)
    return transform, torch.compile(transform, fullgraph=True, dynamic=False)


def test_compiled_matches_eager_without_recompiling(compiled):
    eager, fast = compiled
    x = (_digits(40) * 255).to(torch.uint8)
    y = torch.zeros(40, dtype=torch.int64)
    bs = batches(random.key(0), x, y, 8)  # fixed-shape views into one gathered tensor
    key = random.key(11)
    tol = dict(atol=1e-5 / 0.3081, rtol=0)  # 1e-5 in pixel units, after the division by std
    torch.testing.assert_close(fast(key, bs[0].images), eager(key, bs[0].images), **tol)
    with torch.compiler.set_stance("fail_on_recompile"):  # a new key and a new batch reuse the graph
        for i, b in enumerate(bs[1:3]):
            k = random.fold_in(key, i + 1)
            torch.testing.assert_close(fast(k, b.images), eager(k, b.images), **tol)
