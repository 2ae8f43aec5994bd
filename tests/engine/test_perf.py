"""hwr.engine.perf: channels-last and autocast wrappers, the ATen-kernel compile options, and the exact relu/pool reorder."""

import pytest
import torch
from tiny import TINY_CNN

from benchmarks import reference
from hwr import losses, optim, random, tree
from hwr.data import batches
from hwr.engine import perf, train
from hwr.models import cnn

TINY = TINY_CNN
DEEP_BN = cnn.CNNConfig(channels=(4, 8, 8), convs_per_block=2, norm="batch", hidden=0)


def _batch(n: int = 8) -> batches.Batch:
    images = (random.uniform(random.key(1), (n, 1, 28, 28)) * 255).to(torch.uint8)
    images[:, :, :9] = 0  # blank rows: exact ties inside pooling windows
    return batches.Batch(images, random.randint(random.key(2), (n,), 0, 10), torch.ones(n, dtype=torch.bool))


@pytest.mark.parametrize("cfg", [cnn.CNNConfig(), DEEP_BN], ids=["seed", "deep_bn"])
def test_pool_before_relu_is_bitwise_the_seed_order(cfg):
    """cnn.apply pools before its relu; values and gradients equal relu-then-pool bit for bit, ties included."""
    model = cnn.model(cfg)
    params, state = model.init(random.key(0)), model.init_state()
    x = batches.to_float(None, _batch(16).images)

    def ours(p):
        return model.apply(p, state, x, train=True)[0]

    def seed(p):
        return reference.seed_order_apply(cfg, p, state, x)  # the seed's order, relu then max-pool

    assert torch.equal(ours(params), seed(params))
    g1 = torch.func.grad(lambda p: ours(p).square().sum())(params)
    g0 = torch.func.grad(lambda p: seed(p).square().sum())(params)
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(g1), tree.leaves(g0)))


def test_nhwc_strides_and_values():
    one = torch.rand(3, 1, 5, 6)
    many = torch.rand(3, 4, 5, 6)
    assert perf.nhwc(one).stride() == (30, 1, 6, 1)  # contiguous(memory_format=...) would keep (30, 30, 6, 1)
    assert perf.nhwc(many).stride() == (120, 1, 24, 4)
    assert torch.equal(perf.nhwc(one), one) and torch.equal(perf.nhwc(many), many)
    assert perf.nhwc(one).data_ptr() == one.data_ptr()  # a view for one channel


def test_nhwc_works_under_vmap():
    xs = torch.rand(2, 3, 4, 5, 6)
    assert torch.equal(torch.func.vmap(perf.nhwc)(xs), xs)


@pytest.mark.parametrize("cfg", [TINY, DEEP_BN], ids=["tiny", "deep_bn"])
def test_channels_last_computes_the_same_function(cfg):
    model = cnn.model(cfg)
    fast = perf.channels_last(model)
    params, state = model.init(random.key(3)), model.init_state()
    x = batches.to_float(None, _batch().images)
    y0, s0 = model.apply(params, state, x, train=True)
    y1, s1 = fast.apply(params, state, x, train=True)
    # ATen's batch norm sums a channel's values in another order in NHWC than in NCHW: float rounding, no more
    # (both within 1.5e-5 of a float64 reference, relative to the largest gradient entry)
    torch.testing.assert_close(y1, y0, atol=1e-4, rtol=1e-4)
    for a, b in zip(tree.leaves(s1), tree.leaves(s0)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    g0 = torch.func.grad(lambda p: model.apply(p, state, x, train=True)[0].square().sum())(params)
    g1 = torch.func.grad(lambda p: fast.apply(p, state, x, train=True)[0].square().sum())(params)
    for a, b in zip(tree.leaves(g1), tree.leaves(g0)):  # within 1e-4 of each gradient's largest entry
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()), float((a - b).abs().max())
    assert fast.init is model.init and fast.config == model.config and "channels_last" in fast.name


def test_channels_last_leaves_params_untouched():
    model = cnn.model(TINY)
    params = model.init(random.key(4))
    copies, strides = tree.map(torch.clone, params), [t.stride() for t in tree.leaves(params)]
    perf.channels_last(model).apply(params, {}, torch.rand(2, 1, 28, 28))
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(params), tree.leaves(copies)))
    assert [t.stride() for t in tree.leaves(params)] == strides


def test_autocast_returns_float32_logits_close_to_float32():
    model = cnn.model(TINY)
    params = model.init(random.key(5))
    x = batches.to_float(None, _batch().images)
    y, _ = perf.autocast(model).apply(params, {}, x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, model.apply(params, {}, x)[0], atol=5e-2, rtol=5e-2)


def test_autocast_names_the_allowed_dtypes():
    with pytest.raises(ValueError, match="bfloat16"):
        perf.autocast(cnn.model(TINY), "int8")


def test_has_bf16_is_a_bool():
    assert isinstance(perf.has_bf16(), bool)


@pytest.fixture(scope="module")
def fast_steps():
    """One eager and one compiled (channels-last + ATEN_GRAPH) step of the tiny CNN, compiled once."""
    model = perf.channels_last(cnn.model(TINY))
    opt = optim.adam(1e-3)
    step = train.train_step(model, opt, losses.cross_entropy)
    return model, opt, step, train.compile(step, **perf.ATEN_GRAPH)


def test_aten_graph_step_matches_the_eager_step(fast_steps):
    model, opt, step, compiled = fast_steps
    state = train.init_state(model, opt, random.key(6))
    batch = _batch()
    e_state, c_state = state, state
    for _ in range(3):
        e_state, e_metrics = step(e_state, batch)
        c_state, c_metrics = compiled(c_state, batch)
    for a, b in zip(tree.leaves(c_state.params), tree.leaves(e_state.params)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_metrics["loss"], e_metrics["loss"], atol=1e-5, rtol=1e-5)
    assert int(c_state.step) == 3


def test_aten_graph_step_does_not_recompile(fast_steps):
    model, opt, _, compiled = fast_steps
    state = train.init_state(model, opt, random.key(7))
    state, _ = compiled(state, _batch())
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(2):
            state, _ = compiled(state, _batch())
