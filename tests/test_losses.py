"""hwr.losses: parity with F.cross_entropy, masking, logit adjustment, class-weight formulas, make_loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from hwr import losses
from hwr.losses import LossConfig

C = 5


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, generator=g) * 3
    labels = torch.randint(0, C, (n,), generator=g)
    return logits, labels


WEIGHTS = torch.tensor([0.2, 1.0, 3.0, 0.5, 1.7])


@pytest.mark.parametrize("weight", [None, WEIGHTS])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_cross_entropy_equals_torch(weight, smoothing):
    logits, labels = _data()
    ours = losses.cross_entropy(logits, labels, class_weights=weight, label_smoothing=smoothing)
    ref = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)
    assert ours.shape == () and ours.dtype == torch.float32
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("weight", [None, WEIGHTS])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_mask_drops_samples_exactly(weight, smoothing):
    logits, labels = _data(16, seed=1)
    mask = torch.tensor([True, False] * 8)
    mask[3] = False
    ours = losses.cross_entropy(logits, labels, mask, class_weights=weight, label_smoothing=smoothing)
    ref = F.cross_entropy(logits[mask], labels[mask], weight=weight, label_smoothing=smoothing)
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-7)
    # masked samples do not matter, even when their logits are huge
    garbage = logits.clone()
    garbage[~mask] = 1e4
    assert torch.allclose(
        losses.cross_entropy(garbage, labels, mask, class_weights=weight, label_smoothing=smoothing), ours, atol=1e-6
    )
    assert torch.equal(
        losses.cross_entropy(logits, labels, torch.ones(16, dtype=torch.bool)), losses.cross_entropy(logits, labels)
    )
    assert float(losses.cross_entropy(logits, labels, torch.zeros(16, dtype=torch.bool))) == 0.0


def test_cross_entropy_gradient_equals_torch():
    logits, labels = _data()
    x = logits.clone().requires_grad_()
    F.cross_entropy(x, labels, weight=WEIGHTS, label_smoothing=0.1).backward()
    g = torch.func.grad(lambda t: losses.cross_entropy(t, labels, class_weights=WEIGHTS, label_smoothing=0.1))(logits)
    assert torch.allclose(g, x.grad, rtol=1e-5, atol=1e-7)


def test_logit_adjusted_equals_cross_entropy_of_shifted_logits():
    logits, labels = _data()
    prior = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    for tau in (0.0, 1.0, 1.5):
        ours = losses.logit_adjusted_cross_entropy(logits, labels, class_prior=prior, tau=tau, label_smoothing=0.1)
        ref = F.cross_entropy(logits + tau * prior.log(), labels, label_smoothing=0.1)
        assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-7)
    mask = torch.arange(12) % 3 != 0
    ours = losses.logit_adjusted_cross_entropy(logits, labels, mask, class_prior=prior)
    assert torch.allclose(ours, F.cross_entropy(logits[mask] + prior.log(), labels[mask]), rtol=1e-6)


def test_inverse_frequency_weights_by_hand():
    counts = [100, 10, 1, 50]
    w = losses.inverse_frequency_weights(counts)
    raw = [1 / 100, 1 / 10, 1, 1 / 50]
    expected = [r * 4 / sum(raw) for r in raw]
    assert w.dtype == torch.float64
    assert w.tolist() == pytest.approx(expected, rel=1e-12)
    assert float(w.mean()) == pytest.approx(1.0)
    sqrt = losses.inverse_frequency_weights(counts, power=0.5)
    raw = [c**-0.5 for c in counts]
    assert sqrt.tolist() == pytest.approx([r * 4 / sum(raw) for r in raw], rel=1e-12)
    assert losses.inverse_frequency_weights(counts, power=0.0).tolist() == pytest.approx([1.0] * 4)


def test_effective_number_weights_by_hand():
    counts, beta = [1000, 100, 10, 1], 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    w = losses.effective_number_weights(counts, beta)
    assert w.tolist() == pytest.approx([r * 4 / sum(raw) for r in raw], rel=1e-12)
    assert losses.effective_number_weights(counts, 0.0).tolist() == pytest.approx([1.0] * 4)
    assert losses.effective_number_weights(counts, 1e-9).tolist() == pytest.approx([1.0] * 4, rel=1e-6)
    near_one = losses.effective_number_weights(counts, 1 - 1e-9)  # beta -> 1: inverse frequency
    assert near_one.tolist() == pytest.approx(losses.inverse_frequency_weights(counts).tolist(), rel=1e-4)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="beta"):
            losses.effective_number_weights(counts, bad)


@pytest.mark.parametrize("counts", [[], [3, 0, 2], [[1, 2]], [-1, 4]])
def test_bad_counts_raise(counts):
    with pytest.raises(ValueError, match="class counts"):
        losses.inverse_frequency_weights(counts)


def test_make_loss_builds_each_weighting():
    logits, labels = _data()
    counts = [40, 30, 20, 8, 2]
    none = losses.make_loss(LossConfig(label_smoothing=0.1))
    assert torch.allclose(none(logits, labels), F.cross_entropy(logits, labels, label_smoothing=0.1), rtol=1e-6)
    inv = losses.make_loss(LossConfig(weighting="inverse", power=0.5), counts)
    w = losses.inverse_frequency_weights(counts, 0.5).float()
    assert torch.allclose(inv(logits, labels), F.cross_entropy(logits, labels, weight=w), rtol=1e-6)
    eff = losses.make_loss(LossConfig(weighting="effective", beta=0.9), counts)
    w = losses.effective_number_weights(counts, 0.9).float()
    assert torch.allclose(eff(logits, labels), F.cross_entropy(logits, labels, weight=w), rtol=1e-6)
    la = losses.make_loss(LossConfig(weighting="logit_adjust", tau=2.0), counts)
    prior = torch.tensor(counts, dtype=torch.float32) / sum(counts)
    assert torch.allclose(la(logits, labels), F.cross_entropy(logits + 2.0 * prior.log(), labels), rtol=1e-6)
    mask = torch.arange(12) < 6
    assert torch.allclose(
        inv(logits, labels, mask),
        F.cross_entropy(logits[:6], labels[:6], weight=losses.inverse_frequency_weights(counts, 0.5).float()),
        rtol=1e-6,
    )
    assert losses.class_weights(LossConfig(), counts) is None
    assert losses.class_weights(LossConfig(weighting="logit_adjust"), counts) is None


def test_make_loss_and_config_errors():
    with pytest.raises(ValueError, match="needs the training set's class counts"):
        losses.make_loss(LossConfig(weighting="inverse"))
    with pytest.raises(ValueError, match="needs the training set's class counts"):
        losses.make_loss(LossConfig(weighting="logit_adjust"))
    with pytest.raises(ValueError, match="unknown class weighting 'focal'"):
        LossConfig(weighting="focal")
    for s in (1.0, -0.1):
        with pytest.raises(ValueError, match="label_smoothing"):
            LossConfig(label_smoothing=s)


def test_uniform_logits_give_log_num_classes():
    labels = torch.arange(C)
    assert float(losses.cross_entropy(torch.zeros(C, C), labels)) == pytest.approx(math.log(C), rel=1e-6)


@pytest.mark.parametrize("weight", [None, WEIGHTS])
def test_one_hot_soft_targets_equal_integer_labels(weight):
    logits, labels = _data(16, seed=3)
    mask = torch.arange(16) % 5 != 0
    soft = F.one_hot(labels, C).float()
    for s in (0.0, 0.1):
        a = losses.cross_entropy(logits, labels, mask, class_weights=weight, label_smoothing=s)
        b = losses.cross_entropy(logits, soft, mask, class_weights=weight, label_smoothing=s)
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="soft targets"):
        losses.cross_entropy(logits, soft[:, :3])


def test_deferred_reweighting_switches_at_the_step():
    logits, labels = _data(20, seed=4)
    counts = [50, 20, 8, 3, 1]
    plain = losses.make_loss(LossConfig())
    weighted = losses.make_loss(LossConfig("inverse"), counts)
    drw = losses.make_loss(LossConfig("inverse", defer=0.5), counts, total_steps=100)
    assert isinstance(drw, losses.Scheduled)
    for step, ref in ((0, plain), (49, plain), (50, weighted), (99, weighted)):
        assert torch.allclose(drw(logits, labels, None, torch.tensor(step)), ref(logits, labels))
    assert not torch.allclose(plain(logits, labels), weighted(logits, labels))
    with pytest.raises(TypeError, match="step"):
        drw(logits, labels)
    with pytest.raises(ValueError, match="defer"):
        LossConfig("inverse", defer=1.0)
    assert not isinstance(losses.make_loss(LossConfig(defer=0.5), counts, total_steps=10), losses.Scheduled)


def test_posthoc_adjustment_is_logit_minus_tau_log_prior():
    logits, _ = _data()
    prior = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    out = losses.posthoc_adjust(logits, prior, tau=0.7)
    assert torch.allclose(out, logits - 0.7 * prior.log())
    # a balanced prior changes nothing but a constant shift, so no prediction changes
    flat = losses.posthoc_adjust(logits, torch.full((C,), 0.2))
    assert torch.equal(flat.argmax(-1), logits.argmax(-1))
