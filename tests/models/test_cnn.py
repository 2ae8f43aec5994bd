"""hwr.models.cnn: parity with the seed nn.Module (benchmarks.reference), config variants and input errors; what every
family must do is in test_models.py."""

import math

import pytest
import torch

from benchmarks import reference
from hwr import models, random, tree
from hwr.models.cnn import CNNConfig


def _images(n=16, seed=0, channels=1, size=28):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_seed_cnn_equals_seed_module():
    module = reference.module()
    model = models.get("cnn")
    assert model.name == "cnn" and model.config == CNNConfig()
    params = reference.params_of(module)
    ours = model.init(random.key(0))
    assert tree.structure(ours) == tree.structure(params)
    for name, leaf in tree.flatten_names(ours).items():
        assert leaf.shape == tree.flatten_names(params)[name].shape, name
    x = _images()
    logits, state = model.apply(params, model.init_state(), x)
    assert state == {}
    assert logits.shape == (16, 10)
    with torch.no_grad():
        assert torch.allclose(logits, module(x), atol=1e-6, rtol=0)
    # training mode without dropout or norm is the same function
    assert torch.allclose(model.apply(params, {}, x, train=True)[0], logits, atol=0, rtol=0)


def test_seed_cnn_init_bounds_match_pytorch_defaults():
    module = reference.module()
    ours = tree.flatten_names(models.get("cnn").init(random.key(3)))
    ref = tree.flatten_names(reference.params_of(module))
    fan_in = {"block1.conv1": 9, "block2.conv1": 32 * 9, "fc": 3136, "head": 128}
    for name, leaf in ours.items():
        bound = 1.0 / math.sqrt(fan_in[name.rsplit(".", 1)[0]])
        assert float(leaf.abs().max()) <= bound, name
        assert float(ref[name].abs().max()) <= bound * (1 + 1e-6), name
        if leaf.numel() >= 1000:
            assert abs(float(leaf.var()) / float(ref[name].var()) - 1) < 0.1, name


def test_init_is_deterministic_in_the_key():
    m = models.get("cnn")
    a, b, c = m.init(random.key(1)), m.init(random.key(1)), m.init(random.key(2))
    assert all(torch.equal(x, y) for x, y in zip(tree.leaves(a), tree.leaves(b)))
    assert not any(torch.equal(x, y) for x, y in zip(tree.leaves(a), tree.leaves(c)))
    leaves = tree.leaves(a)  # layers draw from different keys
    assert not torch.equal(leaves[0].flatten()[:32], leaves[1])


def _param_count(config: CNNConfig) -> int:
    """Parameter count from the architecture, written out independently of the model code."""
    n, in_ch, bn = 0, config.in_channels, config.norm == "batch"
    for out_ch in config.channels:
        for _ in range(config.convs_per_block):
            n += out_ch * in_ch * config.kernel_size**2 + (2 * out_ch if bn else out_ch)
            in_ch = out_ch
    side = config.image_size
    for _ in config.channels:
        side //= 2
    width = in_ch * side * side
    if config.hidden:
        n += width * config.hidden + config.hidden
        width = config.hidden
    return n + width * config.num_classes + config.num_classes


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (CNNConfig(), 421_642),  # the seed's count
        (CNNConfig(channels=(16, 32, 64)), None),
        (CNNConfig(convs_per_block=2), None),
        (CNNConfig(norm="batch"), None),
        (CNNConfig(hidden=0), 320 + 18_496 + 31_370),
        (CNNConfig(kernel_size=5), None),
        (CNNConfig(channels=(8, 16, 16), convs_per_block=2, norm="batch", hidden=0, kernel_size=5, dropout=0.2), None),
        (CNNConfig(in_channels=3, image_size=32, num_classes=7), None),
    ],
)
def test_config_variants_build_and_run(config, expected):
    m = models.get("cnn", config)
    params = m.init(random.key(0))
    count = _param_count(config)
    assert tree.num_params(params) == count
    if expected is not None:
        assert count == expected
    blocks = [k for k in params if k.startswith("block")]
    assert blocks == [f"block{i}" for i in range(1, len(config.channels) + 1)]
    assert all(len([k for k in params[b] if k.startswith("conv")]) == config.convs_per_block for b in blocks)
    assert ("fc" in params) == bool(config.hidden)
    x = _images(4, channels=config.in_channels, size=config.image_size)
    state = m.init_state()
    logits, new_state = m.apply(params, state, x, key=random.key(1), train=True)
    assert logits.shape == (4, config.num_classes) and bool(torch.isfinite(logits).all())
    assert tree.structure(new_state) == tree.structure(state)
    eval_logits, eval_state = m.apply(params, new_state, x)
    assert eval_logits.shape == (4, config.num_classes)
    if config.norm == "batch":
        assert state["block1"]["norm1"]["mean"].shape == (config.channels[0],)
        assert not torch.equal(new_state["block1"]["norm1"]["mean"], state["block1"]["norm1"]["mean"])
        assert torch.equal(state["block1"]["norm1"]["mean"], torch.zeros(config.channels[0]))  # not mutated
        assert all(torch.equal(a, b) for a, b in zip(tree.leaves(eval_state), tree.leaves(new_state)))
        assert not torch.allclose(eval_logits, logits)  # eval normalises with running, not batch, statistics
        assert "bias" not in params["block1"]["conv1"]  # the norm's shift replaces the conv bias
    else:
        assert state == {} and new_state == {}


def test_dropout_variant_needs_a_key_and_differs_by_key():
    m = models.get("cnn", CNNConfig(dropout=0.5))
    params, x = m.init(random.key(0)), _images(4)
    with pytest.raises(ValueError, match="key"):
        m.apply(params, {}, x, train=True)
    a = m.apply(params, {}, x, key=random.key(1), train=True)[0]
    b = m.apply(params, {}, x, key=random.key(2), train=True)[0]
    assert not torch.allclose(a, b)
    assert torch.equal(a, m.apply(params, {}, x, key=random.key(1), train=True)[0])
    assert torch.equal(m.apply(params, {}, x)[0], m.apply(params, {}, x, key=random.key(1))[0])  # eval: no dropout


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": ()}, "channels"),
        ({"channels": (32, 0)}, "channels"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"norm": "layer"}, "norm"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"channels": (8, 8, 8, 8, 8)}, "pooling blocks"),
        ({"convs_per_block": 0}, "convs_per_block"),
        ({"hidden": -1}, "hidden"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CNNConfig(**kwargs)


def test_wrong_input_shape_and_dtype_raise_clear_errors():
    m = models.get("cnn")
    params = m.init(random.key(0))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\).*x\[:, None\]"):
        m.apply(params, {}, torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match=r"got \(2, 1, 32, 32\)"):
        m.apply(params, {}, torch.rand(2, 1, 32, 32))
    with pytest.raises(TypeError, match="to_float"):
        m.apply(params, {}, torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
