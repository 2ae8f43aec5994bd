"""hwr.data.mix: Beta sampling, per-sample mixup / CutMix, soft targets; purity, determinism, compile."""

import pytest
import torch

from hwr import losses, random
from hwr.data import mix
from hwr.data.mix import MixConfig


@pytest.mark.parametrize("a", [0.2, 0.4, 1.0, 3.0])
def test_beta_moments_match_the_distribution(a):
    s = mix.beta(random.key(1), 100_000, a, a).double()
    assert float(s.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(s.var()) == pytest.approx(1 / (4 * (2 * a + 1)), rel=0.03)
    assert float(s.min()) >= 0 and float(s.max()) <= 1


def test_beta_asymmetric_and_keyed():
    s = mix.beta(random.key(2), 100_000, 2.0, 5.0).double()
    assert float(s.mean()) == pytest.approx(2 / 7, abs=0.005)
    assert torch.equal(mix.beta(random.key(3), 64, 0.4, 0.4), mix.beta(random.key(3), 64, 0.4, 0.4))
    assert not torch.equal(mix.beta(random.key(3), 64, 0.4, 0.4), mix.beta(random.key(4), 64, 0.4, 0.4))
    with pytest.raises(ValueError, match="> 0"):
        mix.beta(random.key(0), 4, 0.0, 1.0)


def _batch(b=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 1, 28, 28, generator=g), torch.randint(0, 10, (b,), generator=g)


def test_mixup_blends_pairs_and_targets_carry_the_weights():
    x, y = _batch()
    x0, y0 = x.clone(), y.clone()
    mixed, perm, lam = mix.mix_images(random.key(5), x, MixConfig(mixup=0.4))
    assert torch.equal(x, x0) and torch.equal(y, y0)  # pure
    want = lam[:, None, None, None] * x + (1 - lam)[:, None, None, None] * x[perm]
    assert torch.allclose(mixed, want, atol=1e-6)
    assert sorted(perm.tolist()) == list(range(32)) and float(lam.std()) > 0.1  # per-sample weights
    t = mix.mixed_targets(y, perm, lam, 10)
    assert torch.allclose(t.sum(1), torch.ones(32))
    assert torch.allclose(t[torch.arange(32), y] + (y != y[perm]) * 0, t[torch.arange(32), y])
    same = y == y[perm]
    assert torch.allclose(t[same, y[same]], torch.ones(int(same.sum())))


def test_cutmix_pastes_a_box_whose_area_is_the_target_weight():
    x, _ = _batch()
    mixed, perm, lam = mix.mix_images(random.key(6), x, MixConfig(cutmix=1.0))
    from_partner = (mixed == x[perm]) & (mixed != x)
    kept = 1 - from_partner.float().mean((1, 2, 3))
    assert torch.allclose(kept, lam, atol=1e-6)  # lam is the area actually kept
    own = mixed == x
    assert bool((own | (mixed == x[perm])).all())  # every pixel comes from one of the pair
    # a box: the pasted pixels of each sample span a rectangle exactly
    for i in range(8):
        m = from_partner[i, 0] | ((mixed[i, 0] == x[perm][i, 0]) & (x[i, 0] == x[perm][i, 0]))
        if m.any():
            rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
            assert int(m.sum()) <= (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)


def test_prob_and_identity():
    x, y = _batch(64)
    mixed, _, lam = mix.mix_images(random.key(7), x, MixConfig(mixup=1.0, cutmix=1.0, prob=0.5))
    untouched = lam == 1
    assert 10 < int(untouched.sum()) < 54 and torch.equal(mixed[untouched], x[untouched])
    same, t = mix.mix(random.key(7), x, y, 10, MixConfig())
    assert same is x and torch.equal(t, torch.nn.functional.one_hot(y, 10).float())
    with pytest.raises(ValueError, match=">= 0"):
        MixConfig(mixup=-1)
    with pytest.raises(TypeError, match="float images"):
        mix.mix_images(random.key(0), (x * 255).to(torch.uint8), MixConfig(mixup=1.0))


def test_soft_targets_loss_equals_the_mixture_of_losses():
    x, y = _batch()
    logits = torch.randn(32, 10)
    _, perm, lam = mix.mix_images(random.key(8), x, MixConfig(mixup=0.4))
    t = mix.mixed_targets(y, perm, lam, 10)
    logp = torch.log_softmax(logits, -1)
    want = -(lam * logp[torch.arange(32), y] + (1 - lam) * logp[torch.arange(32), y[perm]]).mean()
    assert torch.allclose(losses.cross_entropy(logits, t), want, atol=1e-6)


def test_same_key_same_mix_and_compiled_equals_eager():
    x, _ = _batch(16)
    cfg = MixConfig(mixup=0.4, cutmix=1.0)
    fn = lambda k, v: mix.mix_images(k, v, cfg)
    eager = fn(random.key(9), x)
    again = fn(random.key(9), x)
    assert all(torch.equal(a, b) for a, b in zip(eager, again))
    # one graph, traced by AOT autograd; inductor's numerics of mixing inside the compiled train step are
    # tests/tune/test_trial_compiles.py's (a trial with every lever on trains to the same figures compiled)
    compiled = torch.compile(fn, fullgraph=True, dynamic=False, backend="aot_eager")(random.key(9), x)
    for a, b in zip(eager, compiled):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
