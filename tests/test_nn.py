"""hwr.nn: pure layers against their torch.nn counterparts (init bounds, outputs, running statistics, dropout)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn as tnn

from hwr import nn, random, tree


def _x(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _torch_init_bound(module: tnn.Module) -> float:
    """The largest |weight| PyTorch's default init draws for ``module`` (sampled with a private RNG)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module.reset_parameters()
    return float(module.weight.detach().abs().max())


@pytest.mark.parametrize(("in_ch", "out_ch", "k"), [(1, 32, 3), (32, 64, 3), (16, 8, 5)])
def test_init_conv2d_matches_pytorch_default_bounds(in_ch, out_ch, k):
    p = nn.init_conv2d(random.key(0), in_ch, out_ch, k)
    assert p["kernel"].shape == (out_ch, in_ch, k, k) and p["bias"].shape == (out_ch,)
    assert p["kernel"].dtype == torch.float32
    bound = 1.0 / math.sqrt(in_ch * k * k)
    ref = _torch_init_bound(tnn.Conv2d(in_ch, out_ch, k))
    assert ref <= bound * (1 + 1e-6)
    for leaf in (p["kernel"], p["bias"]):
        assert float(leaf.abs().max()) <= bound
    w = p["kernel"]
    assert float(w.abs().max()) > 0.97 * bound  # fills the interval, as torch's does
    assert abs(float(w.mean())) < 0.1 * bound
    assert abs(float(w.var()) / (bound**2 / 3) - 1) < 0.2  # variance of U(-b, b) is b^2/3
    assert not torch.equal(p["kernel"].flatten()[:out_ch], p["bias"])  # kernel and bias use different keys
    assert "bias" not in nn.init_conv2d(random.key(0), in_ch, out_ch, k, bias=False)


def test_init_linear_matches_pytorch_default_bounds():
    p = nn.init_linear(random.key(1), 3136, 128)
    assert p["kernel"].shape == (128, 3136) and p["bias"].shape == (128,)
    bound = 1.0 / math.sqrt(3136)
    ref = _torch_init_bound(tnn.Linear(3136, 128))
    assert ref <= bound * (1 + 1e-6) and ref > 0.99 * bound
    assert 0.99 * bound < float(p["kernel"].abs().max()) <= bound
    assert float(p["bias"].abs().max()) <= bound
    assert abs(float(p["kernel"].var()) / (bound**2 / 3) - 1) < 0.02
    assert torch.equal(nn.init_linear(random.key(1), 3136, 128)["kernel"], p["kernel"])
    assert not torch.equal(nn.init_linear(random.key(2), 3136, 128)["kernel"], p["kernel"])


def test_conv2d_and_linear_equal_torch_modules():
    conv = tnn.Conv2d(3, 5, 3, padding=1)
    x = _x((2, 3, 9, 9))
    p = {"kernel": conv.weight.detach(), "bias": conv.bias.detach()}
    assert torch.allclose(nn.conv2d(p, x), conv(x), atol=1e-6)
    y = nn.conv2d(p, x, stride=2, padding=0)
    assert torch.allclose(y, F.conv2d(x, conv.weight, conv.bias, stride=2), atol=1e-6)
    lin = tnn.Linear(7, 4)
    z = _x((3, 2, 7))
    assert torch.allclose(nn.linear({"kernel": lin.weight, "bias": lin.bias}, z), lin(z), atol=1e-6)
    assert torch.allclose(nn.linear({"kernel": lin.weight}, z), z @ lin.weight.T, atol=1e-6)


def test_layer_norm_equals_torch():
    ln = tnn.LayerNorm(6)
    with torch.no_grad():
        ln.weight.copy_(_x((6,), 1))
        ln.bias.copy_(_x((6,), 2))
    x = _x((4, 3, 6))
    p = nn.init_layer_norm(6)
    assert torch.equal(p["scale"], torch.ones(6)) and torch.equal(p["bias"], torch.zeros(6))
    p = {"scale": ln.weight.detach(), "bias": ln.bias.detach()}
    assert torch.allclose(nn.layer_norm(p, x), ln(x), atol=1e-6)


def _bn_pair(ch=4):
    bn = tnn.BatchNorm2d(ch)
    with torch.no_grad():
        bn.weight.copy_(1 + 0.3 * _x((ch,), 3))
        bn.bias.copy_(_x((ch,), 4))
    p = {"scale": bn.weight.detach().clone(), "bias": bn.bias.detach().clone()}
    return bn, p


def test_batch_norm_train_and_eval_match_batchnorm2d_and_return_state():
    bn, p = _bn_pair()
    _, s = nn.init_batch_norm(4)
    assert torch.equal(s["mean"], bn.running_mean) and torch.equal(s["var"], bn.running_var)
    for i in range(3):  # running statistics accumulate the same way over several steps
        x = 2.0 + 3.0 * _x((5, 4, 6, 6), 10 + i)
        before = tree.map(torch.clone, s)
        y, s_new = nn.batch_norm(p, s, x, train=True)
        y_ref = bn.train()(x)
        assert torch.allclose(y, y_ref, atol=1e-5)
        assert torch.allclose(s_new["mean"], bn.running_mean, atol=1e-6)
        assert torch.allclose(s_new["var"], bn.running_var, atol=1e-6)
        for name in ("mean", "var"):  # returned, not mutated
            assert torch.equal(s[name], before[name])
        assert not torch.equal(s_new["mean"], s["mean"])
        s = s_new
    x = _x((3, 4, 6, 6), 20)
    y, s_eval = nn.batch_norm(p, s, x, train=False)
    assert torch.allclose(y, bn.eval()(x), atol=1e-5)
    assert s_eval is s


def test_batch_norm_under_bf16_keeps_float32_statistics():
    """bf16 activations (autocast convolutions): y stays bf16, the running statistics float32 and as a float32
    batch norm of the same activations computes them (a bf16 mean would not lerp into float32 state)."""
    bn, p = _bn_pair()
    _, s = nn.init_batch_norm(4)
    x = (2.0 + 3.0 * _x((5, 4, 6, 6), 30)).to(torch.bfloat16)
    y, s_new = nn.batch_norm(p, s, x, train=True)
    assert y.dtype == torch.bfloat16 and s_new["mean"].dtype == s_new["var"].dtype == torch.float32
    y_ref = bn.train()(x.float())
    torch.testing.assert_close(y.float(), y_ref, atol=0.05, rtol=0.02)
    torch.testing.assert_close(s_new["mean"], bn.running_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(s_new["var"], bn.running_var, atol=1e-5, rtol=1e-5)


def test_batch_norm_gradients_match_batchnorm2d():
    bn, p = _bn_pair()
    x = _x((5, 4, 3, 3), 30)
    g = _x((5, 4, 3, 3), 31)
    xr = x.clone().requires_grad_()
    (bn.train()(xr) * g).sum().backward()

    def f(params, inp):
        return (nn.batch_norm(params, nn.init_batch_norm(4)[1], inp, train=True)[0] * g).sum()

    gp, gx = torch.func.grad(f, argnums=(0, 1))(p, x)
    assert torch.allclose(gx, xr.grad, atol=1e-5)
    assert torch.allclose(gp["scale"], bn.weight.grad, atol=1e-5)
    assert torch.allclose(gp["bias"], bn.bias.grad, atol=1e-5)


def test_dropout_needs_key_in_training_and_is_identity_otherwise():
    x = _x((8, 16))
    with pytest.raises(ValueError, match="key"):
        nn.dropout(x, 0.5, key=None, train=True)
    assert nn.dropout(x, 0.5, key=None, train=False) is x
    assert nn.dropout(x, 0.5, key=random.key(0), train=False) is x
    assert nn.dropout(x, 0.0, key=None, train=True) is x


def test_dropout_masks_depend_on_key_and_keep_scale():
    x = torch.ones(200_000)
    a = nn.dropout(x, 0.3, key=random.key(0), train=True)
    b = nn.dropout(x, 0.3, key=random.key(1), train=True)
    assert torch.equal(a, nn.dropout(x, 0.3, key=random.key(0), train=True))
    assert not torch.equal(a == 0, b == 0)
    assert torch.allclose(torch.unique(a), torch.tensor([0.0, 1.0 / 0.7]))
    assert abs(float((a == 0).float().mean()) - 0.3) < 5e-3
    assert abs(float(a.mean()) - 1.0) < 1e-2  # inverted dropout: expectation kept
    # gradients flow only through kept units, scaled by 1/(1-rate)
    g = torch.func.grad(lambda t: nn.dropout(t, 0.3, key=random.key(0), train=True).sum())(x)
    assert torch.allclose(g, a)


def _ties(shape, seed=0):
    """Values with many ties in every window (three levels, a flat band), a NaN run and -inf entries: where the
    first-maximum rule decides which input a gradient reaches."""
    x = torch.randint(0, 3, shape, generator=torch.Generator().manual_seed(seed)).float()
    x[:, :, :3] = 0.5
    x[0, 0, 0, :4] = float("nan")
    x[1, 1, 2, 2] = float("-inf")
    x[-1, -1, -2:, -2:] = float("-inf")
    return x


class _PoolInputs(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the strides of every max-pool kernel's input (which layout ATen ran)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.max_pool2d_with_indices, torch.ops.aten.max_pool2d):
            self.seen.append(args[0].stride())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("shape", "kernel", "ceil"),
    [((8, 4, 9, 13), 2, True), ((8, 4, 9, 13), (2, 1), True), ((8, 4, 8, 12), 2, False), ((8, 4, 7, 7), 2, False)],
)
def test_max_pool2d_equals_torch_to_the_bit_in_values_and_gradients(shape, kernel, ceil):
    """Pooled in NHWC order eagerly on a CPU (the fast ATen kernel), yet the same values, the same gradient for
    every input (ties and NaNs pick the same element), and an NCHW result, as F.max_pool2d."""
    x0 = _ties(shape)
    w = _x(F.max_pool2d(x0, kernel, ceil_mode=ceil).shape, seed=1)
    a, b = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    with _PoolInputs() as seen:
        ya = nn.max_pool2d(a, kernel, ceil_mode=ceil)
    yb = F.max_pool2d(b, kernel, ceil_mode=ceil)
    assert seen.seen and all(s[1] == 1 for s in seen.seen), seen.seen  # channels vary fastest: the NHWC kernel ran
    assert torch.equal(ya.nan_to_num(7.0), yb.nan_to_num(7.0)) and ya.is_contiguous()
    (ya * w).nansum().backward()
    (yb * w).nansum().backward()
    assert torch.equal(a.grad, b.grad) and a.grad.stride() == b.grad.stride()  # NCHW, as torch's
    torch.testing.assert_close(a.detach(), x0, rtol=0, atol=0, equal_nan=True)  # the input untouched
    with torch.no_grad(), _PoolInputs() as seen:  # inference: the values straight from the NHWC kernel
        yc = nn.max_pool2d(a, kernel, ceil_mode=ceil)
    assert seen.seen[0][1] == 1 and torch.equal(yc.nan_to_num(7.0), yb.nan_to_num(7.0)) and yc.is_contiguous()


def test_max_pool2d_leaves_the_layers_below_rounding_as_under_torch():
    """The gradient reaches a convolution and a batch norm in torch's layout, so their own gradients round as
    under F.max_pool2d: the strings step's stem differed by 1e-8 when the pool's gradient came back channels-last."""
    x = _ties((8, 3, 12, 14)).nan_to_num(0.0, neginf=-5.0)
    w = _x((6, 3, 3, 3), seed=3)
    p, s = nn.init_batch_norm(6)

    def loss(pool, w, p):
        y, _ = nn.batch_norm(p, s, F.conv2d(x, w, padding=1), train=True)
        return (pool(y) * torch.arange(6.0).view(1, 6, 1, 1)).square().sum()

    got = torch.func.grad(lambda w, p: loss(lambda y: nn.max_pool2d(y, 2), w, p), argnums=(0, 1))(w, p)
    want = torch.func.grad(lambda w, p: loss(lambda y: F.max_pool2d(y, 2), w, p), argnums=(0, 1))(w, p)
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(got), tree.leaves(want), strict=True))


def test_max_pool2d_under_grad_and_vmap_equals_torch():
    """The functional transforms the steps use (grad; vmap of grad for ensembles) see the same pool."""
    x = _ties((4, 3, 3, 8, 9)).nan_to_num(0.0, neginf=-5.0)  # (members, B, C, H, W); finite gradients
    w = _x((4, 5, 3, 3, 3), seed=2)

    def loss(pool, w, x):
        return (pool(F.conv2d(x, w, padding=1)) ** 2).sum()

    ours = lambda y: nn.max_pool2d(y, 2, ceil_mode=True)
    ref = lambda y: F.max_pool2d(y, 2, ceil_mode=True)
    for transform in (
        lambda f: torch.func.vmap(torch.func.grad(f)),
        lambda f: lambda w, x: torch.func.grad(f)(w[0], x[0]),
    ):
        got = transform(lambda w, x: loss(ours, w, x))(w, x)
        want = transform(lambda w, x: loss(ref, w, x))(w, x)
        assert torch.equal(got, want)


def test_max_pool2d_is_torch_s_own_op_when_compiled_on_meta_and_for_one_channel():
    """Under torch.compile the graph holds F.max_pool2d alone (inductor generates its kernel; no layout copies);
    on another device and for a single channel nothing is reordered either."""
    graphs = []

    def backend(gm, _inputs):
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return gm

    torch._dynamo.reset()
    y = torch.compile(lambda t: nn.max_pool2d(t, 2), backend=backend, fullgraph=True, dynamic=False)(_x((2, 4, 6, 6)))
    assert y.shape == (2, 4, 3, 3) and len(graphs) == 1
    assert not any("permute" in t or "contiguous" in t for t in graphs[0]), graphs
    nhwc = _x((2, 4, 6, 6)).contiguous(memory_format=torch.channels_last)
    with _PoolInputs() as seen:
        m = nn.max_pool2d(torch.empty(2, 4, 6, 6, device="meta"), 2)
        one = nn.max_pool2d(_x((2, 1, 6, 6)), 2)
        nn.max_pool2d(nhwc, 2)  # already channels-last: pooled as it is, no copy
    assert m.device.type == "meta" and m.shape == (2, 4, 3, 3) and torch.equal(one, F.max_pool2d(_x((2, 1, 6, 6)), 2))
    assert seen.seen[0] == (144, 36, 6, 1) and seen.seen[1] == (36, 36, 6, 1)  # NCHW as given
    assert seen.seen[2] == nhwc.stride()
