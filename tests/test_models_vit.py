import math

import pytest
import torch
from torch._dynamo.utils import counters

from hwr import finetune, losses, models, nn, optim, random, train, tree
from hwr.data.batches import Batch
from hwr.models import vit
from hwr.models.vit import ViTConfig

ATOL = 1e-5


def _assert_close_trees(a, b, atol: float = ATOL) -> None:
    fa, fb = tree.flatten_names(a), tree.flatten_names(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        torch.testing.assert_close(fa[name], fb[name], atol=atol, rtol=0, msg=name)


def _torch_layer(p: dict, dim: int, heads: int, mlp_dim: int) -> torch.nn.TransformerEncoderLayer:
    """``nn.TransformerEncoderLayer`` holding the parameters of our block ``p``."""
    ref = torch.nn.TransformerEncoderLayer(
        dim, heads, mlp_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(p["attn"]["qkv"]["kernel"])
        ref.self_attn.in_proj_bias.copy_(p["attn"]["qkv"]["bias"])
        ref.self_attn.out_proj.weight.copy_(p["attn"]["out"]["kernel"])
        ref.self_attn.out_proj.bias.copy_(p["attn"]["out"]["bias"])
        for ours, theirs in (("fc1", ref.linear1), ("fc2", ref.linear2)):
            theirs.weight.copy_(p["mlp"][ours]["kernel"])
            theirs.bias.copy_(p["mlp"][ours]["bias"])
        for ours, theirs in (("norm1", ref.norm1), ("norm2", ref.norm2)):
            theirs.weight.copy_(p[ours]["scale"])
            theirs.bias.copy_(p[ours]["bias"])
    return ref


def _perturb(p: dict, k) -> dict:
    """Non-trivial values everywhere (zero biases and unit norms would hide a wiring mistake)."""
    flat = tree.flatten_names(p)
    keys = random.split(k, len(flat))
    return tree.unflatten_names({n: v + 0.1 * random.normal(kk, v.shape) for (n, v), kk in zip(flat.items(), keys)})


def test_attention_matches_multihead_attention_outputs_and_gradients():
    dim, heads = 12, 3
    p = _perturb(nn.init_attention(random.key(0), dim), random.key(9))
    ref = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(p["qkv"]["kernel"])
        ref.in_proj_bias.copy_(p["qkv"]["bias"])
        ref.out_proj.weight.copy_(p["out"]["kernel"])
        ref.out_proj.bias.copy_(p["out"]["bias"])
    x = random.normal(random.key(1), (4, 7, dim), dtype=torch.float32)
    w = random.normal(random.key(2), (4, 7, dim))
    x_ref = x.clone().requires_grad_(True)
    out_ref, _ = ref(x_ref, x_ref, x_ref, need_weights=False)
    torch.testing.assert_close(nn.multi_head_attention(p, x, heads), out_ref, atol=ATOL, rtol=0)
    (out_ref * w).sum().backward()
    g_p, g_x = torch.func.grad(lambda q, xx: (nn.multi_head_attention(q, xx, heads) * w).sum(), argnums=(0, 1))(p, x)
    expected = {
        "qkv": {"kernel": ref.in_proj_weight.grad, "bias": ref.in_proj_bias.grad},
        "out": {"kernel": ref.out_proj.weight.grad, "bias": ref.out_proj.bias.grad},
    }
    _assert_close_trees(g_p, expected)
    torch.testing.assert_close(g_x, x_ref.grad, atol=ATOL, rtol=0)


def test_attention_init_is_multihead_attention_default_and_rejects_bad_heads():
    p = nn.init_attention(random.key(0), 64)
    bound = math.sqrt(6 / (64 + 192))  # xavier_uniform_ on (3D, D)
    assert p["qkv"]["kernel"].shape == (192, 64) and p["qkv"]["kernel"].abs().max() <= bound
    assert p["qkv"]["kernel"].abs().max() > 0.95 * bound
    assert p["out"]["kernel"].abs().max() <= 1 / 8
    assert not p["qkv"]["bias"].any() and not p["out"]["bias"].any()
    with pytest.raises(ValueError, match="heads=5"):
        nn.multi_head_attention(p, torch.zeros(1, 2, 64), 5)


def test_block_matches_transformer_encoder_layer_outputs_and_gradients():
    dim, heads, mlp_dim = 16, 4, 24
    p = _perturb(vit.init_block(random.key(0), dim, mlp_dim), random.key(7))
    ref = _torch_layer(p, dim, heads, mlp_dim)
    x = random.normal(random.key(1), (3, 9, dim))
    w = random.normal(random.key(2), (3, 9, dim))
    out_ref = ref(x)
    torch.testing.assert_close(vit.block(p, x, heads), out_ref, atol=ATOL, rtol=0)
    (out_ref * w).sum().backward()
    grads = torch.func.grad(lambda q: (vit.block(q, x, heads) * w).sum())(p)
    expected = {
        "norm1": {"scale": ref.norm1.weight.grad, "bias": ref.norm1.bias.grad},
        "attn": {
            "qkv": {"kernel": ref.self_attn.in_proj_weight.grad, "bias": ref.self_attn.in_proj_bias.grad},
            "out": {"kernel": ref.self_attn.out_proj.weight.grad, "bias": ref.self_attn.out_proj.bias.grad},
        },
        "norm2": {"scale": ref.norm2.weight.grad, "bias": ref.norm2.bias.grad},
        "mlp": {
            "fc1": {"kernel": ref.linear1.weight.grad, "bias": ref.linear1.bias.grad},
            "fc2": {"kernel": ref.linear2.weight.grad, "bias": ref.linear2.bias.grad},
        },
    }
    _assert_close_trees(grads, expected)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_model_matches_a_torch_module_stack(pool):
    cfg = ViTConfig(patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32, pool=pool, image_size=12)
    m = vit.model(cfg)
    params = _perturb(m.init(random.key(0)), random.key(5))
    x = random.uniform(random.key(1), (3, 1, 12, 12))
    e = params["embed"]
    tokens = torch.nn.functional.conv2d(x, e["patch"]["kernel"], e["patch"]["bias"], stride=4)  # (3, 16, 3, 3)
    tokens = tokens.flatten(2).transpose(1, 2)  # (3, 9, 16)
    if pool == "cls":
        tokens = torch.cat([e["cls"].expand(3, 1, 16), tokens], 1)
    h = tokens + e["pos"]
    for i in (1, 2):
        h = _torch_layer(params[f"block{i}"], 16, 2, 32)(h)
    h = torch.nn.functional.layer_norm(h, (16,), params["norm"]["scale"], params["norm"]["bias"])
    feats = h[:, 0] if pool == "cls" else h.mean(1)
    expected = feats @ params["head"]["kernel"].T + params["head"]["bias"]
    logits, state = m.apply(params, m.init_state(), x)
    assert state == {}
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_default_model_shapes_and_registry():
    m = models.get("vit")
    assert m.name == "vit" and m.config == ViTConfig()
    params = m.init(random.key(0))
    logits, _ = m.apply(params, m.init_state(), torch.rand(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    assert params["embed"]["pos"].shape == (1, 17, 64) and params["embed"]["cls"].shape == (1, 1, 64)
    assert params["embed"]["patch"]["kernel"].shape == (64, 1, 7, 7)
    assert list(params) == ["embed", "block1", "block2", "block3", "block4", "norm", "head"]
    m4 = models.get("vit", {"patch_size": 4, "pool": "mean", "num_classes": 3, "in_channels": 3})
    p4 = m4.init(random.key(0))
    assert "cls" not in p4["embed"] and p4["embed"]["pos"].shape == (1, 49, 64)
    assert m4.apply(p4, {}, torch.rand(2, 3, 28, 28))[0].shape == (2, 3)


def test_init_is_keyed():
    a, b = vit.model().init(random.key(0)), vit.model().init(random.key(0))
    c = vit.model().init(random.key(1))
    _assert_close_trees(a, b, atol=0)
    assert not torch.equal(a["block4"]["mlp"]["fc1"]["kernel"], c["block4"]["mlp"]["fc1"]["kernel"])
    assert not torch.equal(a["block1"]["attn"]["qkv"]["kernel"], a["block2"]["attn"]["qkv"]["kernel"])
    assert abs(a["embed"]["pos"].std().item() - 0.02) < 0.002


def test_fine_tuning_last_block_is_the_top_block_and_final_norm():
    params = vit.model(ViTConfig(depth=3, dim=8, heads=2, mlp_dim=8)).init(random.key(0))
    groups = finetune.top_level_groups(params)
    assert groups == {"head": ["head"], "last": ["block3", "norm"], "early": ["embed", "block1", "block2"]}


def test_dropout_is_keyed_and_only_in_training():
    cfg = ViTConfig(patch_size=4, dim=8, depth=2, heads=2, mlp_dim=16, dropout=0.3, image_size=8)
    m = vit.model(cfg)
    params = m.init(random.key(0))
    x = random.uniform(random.key(1), (4, 1, 8, 8))
    k1, k2 = random.split(random.key(2))
    a, _ = m.apply(params, {}, x, key=k1, train=True)
    b, _ = m.apply(params, {}, x, key=k1, train=True)
    c, _ = m.apply(params, {}, x, key=k2, train=True)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    no_dropout, _ = vit.model(ViTConfig(patch_size=4, dim=8, depth=2, heads=2, mlp_dim=16, image_size=8)).apply(params, {}, x)
    torch.testing.assert_close(m.apply(params, {}, x, key=k1)[0], no_dropout, atol=0, rtol=0)
    with pytest.raises(ValueError, match="needs key"):
        m.apply(params, {}, x, train=True)
    with pytest.raises(ValueError, match="needs key"):
        vit.block(params["block1"], torch.zeros(1, 5, 8), 2, dropout=0.1, train=True)


def test_apply_is_pure():
    m = vit.model(ViTConfig(patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, dropout=0.2, image_size=8))
    params = m.init(random.key(0))
    before = tree.map(torch.clone, params)
    x = random.uniform(random.key(1), (2, 1, 8, 8))
    x0 = x.clone()
    m.apply(params, {}, x, key=random.key(3), train=True)
    _assert_close_trees(params, before, atol=0)
    assert torch.equal(x, x0)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"patch_size": 5}, "patch_size 5 does not divide"),
        ({"dim": 30, "heads": 4}, "dim 30 is not divisible"),
        ({"pool": "max"}, "pool"),
        ({"depth": 0}, "depth"),
        ({"dropout": -0.1}, "dropout"),
        ({"mlp_dim": 0}, "mlp_dim"),
    ],
)
def test_bad_config_values(values, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**values)


def test_wrong_input():
    m = vit.model(ViTConfig(dim=8, depth=1, heads=2, mlp_dim=8))
    params = m.init(random.key(0))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        m.apply(params, {}, torch.rand(2, 1, 24, 24))
    with pytest.raises(TypeError, match="float"):
        m.apply(params, {}, torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


# ------------------------------------------------------------------------------- compiled training (one compile)

TINY = ViTConfig(patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.1, image_size=8)


@pytest.fixture(scope="module")
def compiled():
    m = vit.model(TINY)
    # eps above rounding noise: the key bias has exactly zero gradient (softmax ignores it), and plain Adam would
    # turn its rounding noise, which differs between eager and compiled kernels, into lr-sized updates of either sign
    opt = optim.adam(1e-2, eps=1e-4)
    step = train.train_step(m, opt, losses.cross_entropy)
    state = train.init_state(m, opt, random.key(0))
    labels = random.randint(random.key(2), (16,), 0, 8)
    noise = random.uniform(random.key(1), (16, 1, 8, 8)) * 100
    images = torch.where(torch.arange(8)[None, None, None, :] == labels[:, None, None, None], 255.0, noise)
    batch = Batch(images.to(torch.uint8), labels, torch.ones(16, dtype=torch.bool))  # class = the bright column
    counters.clear()
    fast = train.compile(step)
    first = fast(state, batch)
    stats = {"graphs": counters["stats"]["unique_graphs"], "breaks": sum(counters["graph_break"].values())}
    return {"step": step, "fast": fast, "state": state, "batch": batch, "first": first, "stats": stats}


def test_compiles_to_one_graph_without_breaks(compiled):
    assert compiled["stats"] == {"graphs": 1, "breaks": 0}


def test_compiled_step_matches_eager(compiled):
    eager_state, eager_m = compiled["step"](compiled["state"], compiled["batch"])
    fast_state, fast_m = compiled["first"]
    _assert_close_trees(fast_state.params, eager_state.params)
    torch.testing.assert_close(fast_m["loss"], eager_m["loss"], atol=ATOL, rtol=0)
    torch.testing.assert_close(fast_m["grad_norm"], eager_m["grad_norm"], atol=1e-4, rtol=1e-5)


def test_compiled_steps_reduce_the_loss_without_recompiling(compiled):
    state, batch = compiled["state"], compiled["batch"]
    first = None
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(25):
            state, m = compiled["fast"](state, batch)
            first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < 0.5 * first
    assert int(state.step) == 25
