"""hwr.ctc: parity with F.ctc_loss (values and gradients, edge cases), zero_infinity, compile, vmap, meta."""

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from hwr import losses
from hwr.ctc import ctc_loss

TOL = 1e-4


def _case(seed: int = 0, b: int = 7, t: int = 12, c: int = 6, s: int = 5):
    """Random logits with hand-picked edge cases: repeated labels, an empty target, a maximal-length target,
    inputs barely long enough (T = L + repeats), a short input and a trailing masked stretch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, c, generator=g)
    tg = torch.randint(1, c, (b, s), generator=g)
    tg[0] = torch.tensor([2, 2, 2, 3, 3])  # repeats: needs 5 + 3 = 8 frames
    tg[1, 2:] = -1  # padding values are ignored
    il = torch.tensor([t, 9, t, 8, 6, t, t])
    tl = torch.tensor([5, 2, 0, 5, 3, s, 1])
    tg[3] = torch.tensor([1, 2, 1, 2, 1])  # no repeats: 5 frames suffice, 8 given
    tg[4, :3] = torch.tensor([4, 4, 4])  # 3 + 2 = 5 frames needed, 6 given
    tg[5] = torch.tensor([1, 1, 2, 2, 3])  # maximal length with repeats: 5 + 2 = 7 frames
    return x, tg, il, tl


def _reference(x, tg, il, tl, **kw):
    tg_ref = tg.clamp_min(0)
    return F.ctc_loss(F.log_softmax(x, -1).transpose(0, 1), tg_ref, il, tl, **kw)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("blank", [0, 5])
def test_values_and_gradients_match_torch(reduction, blank):
    x, tg, il, tl = _case()
    if blank:  # targets must avoid the blank index
        tg = torch.where(tg == blank, 1, tg)
    kw = {"blank": blank, "reduction": reduction}
    xr = x.clone().requires_grad_(True)
    ref = _reference(xr, tg, il, tl, **kw)
    xo = x.clone().requires_grad_(True)
    ours = ctc_loss(xo, tg, il, tl, **kw)
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=TOL)
    w = torch.linspace(0.5, 1.5, ref.numel()).reshape(ref.shape)
    (ref * w).sum().backward()
    (ours * w).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, atol=TOL, rtol=0)


def test_gradient_with_respect_to_log_probs_matches_torch():
    """F.ctc_loss's gradient w.r.t. log_probs assumes normalised inputs; ours equals it (log_softmax inside)."""
    x, tg, il, tl = _case(1)
    lp = F.log_softmax(x, -1).detach()
    a = lp.clone().requires_grad_(True)
    F.ctc_loss(a.transpose(0, 1), tg.clamp_min(0), il, tl).backward()
    b = lp.clone().requires_grad_(True)
    ctc_loss(b, tg, il, tl).backward()
    torch.testing.assert_close(b.grad, a.grad, atol=TOL, rtol=0)


def test_hand_checked_value():
    """T=2, one label 'a', uniform over {blank, a}: alignments a-, -a, aa, each 1/4: loss = -log(3/4)."""
    x = torch.zeros(1, 2, 2)
    loss = ctc_loss(x, torch.tensor([[1]]), torch.tensor([2]), torch.tensor([1]), reduction="sum")
    torch.testing.assert_close(loss, -torch.log(torch.tensor(0.75)))
    # empty target: only the all-blank path, probability 1/4
    empty = ctc_loss(x, torch.tensor([[1]]), torch.tensor([2]), torch.tensor([0]), reduction="sum")
    torch.testing.assert_close(empty, -torch.log(torch.tensor(0.25)))


def test_impossible_alignment_and_zero_infinity():
    x, tg, il, tl = _case(2)
    il = il.clone()
    il[0] = 7  # [2,2,2,3,3] needs 8 frames
    xr = x.clone().requires_grad_(True)
    ours = ctc_loss(xr, tg, il, tl, reduction="none")
    ref = _reference(x, tg, il, tl, reduction="none")
    assert torch.isinf(ours[0]) and torch.isinf(ref[0])
    torch.testing.assert_close(ours[1:], ref[1:], atol=TOL, rtol=TOL)
    ours[1:].sum().backward()
    assert torch.isfinite(xr.grad).all()  # the impossible sample does not poison the others

    for reduction in ("none", "mean", "sum"):
        xa = x.clone().requires_grad_(True)
        a = ctc_loss(xa, tg, il, tl, reduction=reduction, zero_infinity=True)
        xb = x.clone().requires_grad_(True)
        b = _reference(xb, tg, il, tl, reduction=reduction, zero_infinity=True)
        torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)
        a.sum().backward()
        b.sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, atol=TOL, rtol=0)
        assert (xa.grad[0] == 0).all()


def test_float64_and_errors():
    x, tg, il, tl = _case(3)
    x = x.double()
    ours = ctc_loss(x, tg, il, tl, reduction="none")
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, _reference(x, tg, il, tl, reduction="none"), atol=1e-8, rtol=1e-8)
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(x, tg, il, tl, reduction="avg")
    with pytest.raises(ValueError, match="blank"):
        ctc_loss(x, tg, il, tl, blank=6)
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        ctc_loss(x[0], tg, il, tl)


def test_vmap_over_an_ensemble_axis():
    x, tg, il, tl = _case(4)
    xs = torch.stack([x, x * 0.5, -x])  # (K, B, T, C)
    fn = lambda lp: ctc_loss(lp, tg, il, tl, reduction="none")
    out = torch.vmap(fn)(xs)
    expected = torch.stack([fn(v) for v in xs])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    grads = torch.vmap(torch.func.grad(lambda lp: fn(lp).sum()))(xs)
    torch.testing.assert_close(grads[1], torch.func.grad(lambda lp: fn(lp).sum())(xs[1]), atol=1e-5, rtol=0)


def test_compiles_to_one_graph_with_gradients():
    x, tg, il, tl = _case(5, t=8)
    il = il.clamp_max(8)

    def value_and_grad(lp):
        return torch.func.grad_and_value(lambda v: ctc_loss(v, tg, il, tl, zero_infinity=True))(lp)

    counters.clear()
    compiled = torch.compile(value_and_grad, fullgraph=True, dynamic=False)
    g, v = compiled(x)
    g_ref, v_ref = value_and_grad(x)
    torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=0)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


def test_meta_device_stays_on_meta():
    x, tg, il, tl = _case(6)
    out = ctc_loss(x.to("meta"), tg.to("meta"), il.to("meta"), tl.to("meta"), reduction="none")
    assert out.device.type == "meta" and out.shape == (7,)


def test_reexported_from_losses():
    assert losses.ctc is ctc_loss
