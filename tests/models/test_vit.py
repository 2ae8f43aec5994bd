import math

import pytest
import torch

from hwr import models, nn, random, tree
from hwr.models import vit
from hwr.models.vit import ViTConfig
from hwr.tasks.digits import finetune

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


def test_default_parameter_shapes():  # the default model's name, config and logits: test_models.py
    params = models.get("vit").init(random.key(0))
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


def test_block_dropout_needs_a_key_in_training():
    params = vit.model(ViTConfig(patch_size=4, dim=8, depth=2, heads=2, mlp_dim=16, image_size=8)).init(random.key(0))
    with pytest.raises(ValueError, match="needs key"):
        vit.block(params["block1"], torch.zeros(1, 5, 8), 2, dropout=0.1, train=True)


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
