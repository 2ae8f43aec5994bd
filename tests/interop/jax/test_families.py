"""hwr.interop.jax for every family: a twin per registered family, exact Flax layouts both ways, forward parity
with hwr's apply (eval, training with batch stats and dropout), and torch-free files."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

jax = pytest.importorskip("jax", reason="JAX interop needs the optional extra: pip install -e '.[jax]'")
import jax.numpy as jnp

from hwr import models, random, tree
from hwr.interop import jax as hj
from hwr.interop.jax import rnn as jax_rnn
from hwr.models.cnn import CNNConfig
from hwr.models.rnn import RNNConfig
from hwr.models.vit import ViTConfig

jax.config.update("jax_default_matmul_precision", "highest")

# each family's default config, and non-default ones that reach every branch of its forward and layout
CASES = {
    "cnn": ("cnn", CNNConfig()),
    "cnn_bn_dropout_nohidden": (
        "cnn",
        CNNConfig(
            channels=(4, 8),
            convs_per_block=2,
            norm="batch",
            hidden=0,
            dropout=0.3,
            kernel_size=5,
            in_channels=2,
            image_size=12,
        ),
    ),
    "rnn": ("rnn", RNNConfig()),
    "rnn_lstm_rows": ("rnn", RNNConfig(cell="lstm", hidden=16)),
    "rnn_gru_bi_rows_2ch": (
        "rnn",
        RNNConfig(hidden=8, num_layers=2, bidirectional=True, dropout=0.3, in_channels=2, image_size=12),
    ),
    "rnn_lstm_bi_conv_mean": (
        "rnn",
        RNNConfig(
            cell="lstm",
            hidden=8,
            num_layers=2,
            bidirectional=True,
            reader="conv",
            stem_channels=4,
            readout="mean",
            dropout=0.2,
            image_size=14,
        ),
    ),
    "rnn_gru_conv": ("rnn", RNNConfig(reader="conv", hidden=8, stem_channels=3, image_size=14)),
    "rnn_hidden_head": ("rnn", RNNConfig(hidden=8, head_hidden=12, image_size=14)),
    "vit": ("vit", ViTConfig()),
    "vit_hidden_head": ("vit", ViTConfig(dim=16, depth=1, heads=2, mlp_dim=8, head_hidden=24, image_size=14)),
    "vit_mean_dropout_rgb": (
        "vit",
        ViTConfig(
            patch_size=4, dim=16, depth=2, heads=4, mlp_dim=24, pool="mean", dropout=0.2, in_channels=3, image_size=12
        ),
    ),
}
if "crnn" in hj.TWINS:  # the strings family: (B, C, height, W) in, (B, T, classes + 1) out
    from hwr.models.crnn import CRNNConfig

    CASES |= {
        "crnn": ("crnn", CRNNConfig()),
        "crnn_lstm_proj_2convs": (
            "crnn",
            CRNNConfig(
                encoder="lstm",
                proj=16,
                hidden=8,
                num_layers=2,
                dropout=0.2,
                channels=(4, 8),
                width_pools=1,
                convs_per_block=2,
                height=20,
            ),
        ),
        "crnn_transformer": (
            "crnn",
            CRNNConfig(
                encoder="transformer",
                hidden=16,
                heads=2,
                mlp_dim=24,
                num_layers=2,
                channels=(4, 8),
                norm="none",
                dropout=0.1,
            ),
        ),
        "crnn_gru_uni_2ch": (
            "crnn",
            CRNNConfig(bidirectional=False, hidden=8, channels=(4,), width_pools=0, height=10, in_channels=2),
        ),
    }


def _images(config, key, batch: int) -> torch.Tensor:
    """Float images for ``config``: square ``image_size`` ones, or strings ``height`` x 37 (an odd width)."""
    size = getattr(config, "image_size", None)
    shape = (size, size) if size else (config.height, 37)
    return random.uniform(key, (batch, config.in_channels, *shape))


def _nhwc(x: torch.Tensor) -> jax.Array:
    return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def _equal_trees(a, b) -> bool:
    tree.assert_same_structure(a, b)
    return all(torch.equal(x, y) and x.dtype == y.dtype for x, y in zip(tree.leaves(a), tree.leaves(b)))


def _setup(case: str, seed: int = 0):
    name, config = CASES[case]
    model = models.get(name, config)
    params = model.init(random.key(seed))
    stats = tree.flatten_names(model.init_state())  # running statistics of the scale the activations have
    k = random.key(seed + 1)
    state = tree.unflatten_names(
        {
            n: 0.02 * random.normal(k, s.shape) if n.endswith("mean") else 0.02 + 0.05 * random.uniform(k, s.shape)
            for n, s in stats.items()
        }
    )
    return name, config, model, params, state


# ---------------------------------------------------------------------------------------------- registry


def test_every_registered_family_has_a_jax_twin():
    missing = hj.missing_twins()
    assert not missing, (
        f"families {missing} are registered in hwr.models but have no JAX twin in hwr.interop: add "
        "hwr/interop/jax_<family>.py (to_flax, from_flax, forward) and list it in jax_families.TWINS"
    )


def test_every_twin_is_tested_with_its_default_config():
    defaults = {name for name, config in CASES.values() if config == type(config)()}
    assert defaults >= set(hj.TWINS), f"no default-config case for {sorted(set(hj.TWINS) - defaults)}"
    assert {name for name, _ in CASES.values()} == set(hj.TWINS)


# ---------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("case", list(CASES))
def test_flax_round_trip_is_exact_both_ways(case):
    _, config, _, params, _ = _setup(case)
    flax = hj.to_flax(params, config)
    assert _equal_trees(hj.from_flax(flax, config), params)
    # a Flax user's dict: keys sorted by jax.tree_util, NumPy leaves
    resorted = jax.tree_util.tree_map(jax.device_get, flax)
    again = hj.to_flax(hj.from_flax(resorted, config), config)
    assert tree.flatten_names(hj.from_jax(again)).keys() == tree.flatten_names(hj.from_jax(flax)).keys()
    for a, b in zip(tree.leaves(hj.from_jax(again)), tree.leaves(hj.from_jax(flax))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", ["cnn_bn_dropout_nohidden"])
def test_batch_stats_round_trip(case):
    _, config, _, _, state = _setup(case)
    stats = hj.stats_to_flax(state)
    assert stats["block2"]["norm2"]["var"].shape == (8,)
    resorted = jax.tree_util.tree_map(jax.device_get, stats)
    assert _equal_trees(hj.stats_from_flax(resorted, config), state)


def test_gru_layout_is_one_dense_per_gate_in_flax_order():
    config = RNNConfig(hidden=8, num_layers=2, bidirectional=True, in_channels=2, image_size=12)
    params = models.get("rnn", config).init(random.key(3))
    flax = hj.to_flax(params, config)
    cell = flax["layer2"]["bwd"]
    assert sorted(cell) == ["hn", "hr", "hz", "in", "ir", "iz"]
    hwr = params["layer2"]["bwd"]
    for g, gate in enumerate("rzn"):
        assert torch.equal(torch.from_dlpack(cell[f"i{gate}"]["kernel"]), hwr["ih"]["kernel"][8 * g : 8 * (g + 1)].T)
        assert torch.equal(torch.from_dlpack(cell[f"h{gate}"]["bias"]), hwr["hh"]["bias"][8 * g : 8 * (g + 1)])
    assert cell["ir"]["kernel"].shape == (16, 8) and cell["hn"]["kernel"].shape == (8, 8)
    # first layer: NHWC features (w, c) per row; hwr's are (c, w)
    k, w, c, o = params["layer1"]["fwd"]["ih"]["kernel"], 5, 1, 3
    assert float(flax["layer1"]["fwd"]["iz"]["kernel"][w * 2 + c, o]) == float(k[8 + o, c * 12 + w])


def test_lstm_conv_reader_layout():
    config = RNNConfig(cell="lstm", reader="conv", hidden=4, stem_channels=3, image_size=14)
    params = models.get("rnn", config).init(random.key(4))
    flax = hj.to_flax(params, config)
    assert sorted(flax["layer1"]["fwd"]) == ["hf", "hg", "hi", "ho", "if", "ig", "ii", "io"]
    assert flax["stem"]["conv1"]["kernel"].shape == (3, 3, 1, 3)  # HWIO
    # column features: NHWC (h, s); hwr (s, h) with h < 7, s < 3
    k, h, s, o = params["layer1"]["fwd"]["ih"]["kernel"], 6, 2, 1
    assert float(flax["layer1"]["fwd"]["ig"]["kernel"][h * 3 + s, o]) == float(k[2 * 4 + o, s * 7 + h])


def test_attention_layout_is_flax_multi_head_dot_product():
    config = ViTConfig(dim=16, depth=1, heads=4, mlp_dim=8)
    params = models.get("vit", config).init(random.key(5))
    flax = hj.to_flax(params, config)
    attn, qkv = flax["block1"]["attn"], params["block1"]["attn"]["qkv"]
    assert sorted(attn) == ["key", "out", "query", "value"]
    assert attn["key"]["kernel"].shape == (16, 4, 4) and attn["key"]["bias"].shape == (4, 4)
    assert attn["out"]["kernel"].shape == (4, 4, 16) and attn["out"]["bias"].shape == (16,)
    d_in, head, j = 11, 2, 3  # value row head*4+j of the packed (3D, D) kernel
    assert float(attn["value"]["kernel"][d_in, head, j]) == float(qkv["kernel"][2 * 16 + head * 4 + j, d_in])
    out = params["block1"]["attn"]["out"]["kernel"]
    assert float(attn["out"]["kernel"][head, j, 7]) == float(out[7, head * 4 + j])
    assert flax["embed"]["pos"].shape == (1, 17, 16) and flax["embed"]["cls"].shape == (1, 1, 16)
    assert flax["embed"]["patch"]["kernel"].shape == (7, 7, 1, 16)


@pytest.mark.parametrize("proj", [0, 6])
def test_crnn_column_layout(proj):
    """Columns in NHWC order (h, c): the first layer reading them (proj, else the GRU's input) is reordered."""
    config = CRNNConfig(channels=(4, 8), hidden=4, proj=proj, height=16)  # columns of 8 channels x 4 rows
    params = models.get("crnn", config).init(random.key(7))
    flax = hj.to_flax(params, config)
    h, c, o = 3, 5, 2
    if proj:
        assert float(flax["proj"]["kernel"][h * 8 + c, o]) == float(params["proj"]["kernel"][o, c * 4 + h])
        assert flax["layer1"]["fwd"]["ir"]["kernel"].shape == (6, 4)  # after proj: no reordering
        assert torch.equal(
            torch.from_dlpack(flax["layer1"]["fwd"]["ir"]["kernel"]), params["layer1"]["fwd"]["ih"]["kernel"][:4].T
        )
    else:
        k = params["layer1"]["fwd"]["ih"]["kernel"]
        assert float(flax["layer1"]["fwd"]["iz"]["kernel"][h * 8 + c, o]) == float(k[4 + o, c * 4 + h])
    assert flax["block2"]["conv1"]["kernel"].shape == (3, 3, 4, 8)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_flax_cell_folds_the_biases_into_flax_cells_params(cell):
    """The folded params, run through Flax's GRUCell / OptimizedLSTMCell equations, give the twin's states."""
    config = RNNConfig(cell=cell, hidden=6, image_size=5)
    params = hj.to_flax(models.get("rnn", config).init(random.key(6)), config)["layer1"]["fwd"]
    folded = jax_rnn.flax_cell(params, cell)
    xs = jax.random.normal(jax.random.key(0), (3, 2, 5))  # (B, T, in)

    def dense(p, v):
        return v @ p["kernel"] + p.get("bias", 0.0)

    sig, h, c = jax.nn.sigmoid, jnp.zeros((3, 6)), jnp.zeros((3, 6))
    if cell == "gru":
        assert "bias" not in folded["hr"] and "bias" not in folded["hz"] and "bias" in folded["hn"]
    else:
        assert all("bias" not in folded[f"i{g}"] and "bias" in folded[f"h{g}"] for g in "ifgo")
    for t in range(2):
        x = xs[:, t]
        if cell == "gru":
            r = sig(dense(folded["ir"], x) + dense(folded["hr"], h))
            z = sig(dense(folded["iz"], x) + dense(folded["hz"], h))
            n = jnp.tanh(dense(folded["in"], x) + r * dense(folded["hn"], h))
            h = (1.0 - z) * n + z * h
        else:
            gate = {g: dense(folded[f"i{g}"], x) + dense(folded[f"h{g}"], h) for g in "ifgo"}
            c = sig(gate["f"]) * c + sig(gate["i"]) * jnp.tanh(gate["g"])
            h = sig(gate["o"]) * jnp.tanh(c)
    _, last = jax_rnn.direction(cell, params, xs, False, None)
    assert jnp.allclose(last, h, atol=1e-6)


# ---------------------------------------------------------------------------------------------- forward parity


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_jax_forward_equals_hwr_apply(case, training):
    """Logits and new batch stats; in training the dropout masks come from the same hwr key."""
    name, config, model, params, state = _setup(case, seed=7)
    x = _images(config, random.key(8), 5)
    key = random.key(9)
    want, want_state = model.apply(params, state, x, key=key, train=training)
    got, got_state = hj.apply(
        name,
        hj.to_flax(params, config),
        _nhwc(x),
        config,
        state=hj.stats_to_flax(state),
        key=hj.jax_random.from_hwr(key),
        train=training,
    )
    assert want.std(0).max() > 1e-3  # the logits depend on the input: no dead network agreeing on biases
    torch.testing.assert_close(hj.from_jax(got), want, atol=1e-5, rtol=1e-5)
    back = hj.stats_from_flax(got_state, config)
    tree.assert_same_structure(back, want_state)
    for a, b in zip(tree.leaves(back), tree.leaves(want_state)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    if training and (config.dropout > 0 or getattr(config, "norm", "none") == "batch"):
        assert not torch.allclose(want, model.apply(params, state, x, train=False)[0], atol=1e-3)  # not trivial


def test_per_family_functions_return_the_logits():
    for case, fn in [("rnn_gru_conv", hj.rnn_apply), ("vit_mean_dropout_rgb", hj.vit_apply)]:
        _, config, model, params, _ = _setup(case)
        x = random.uniform(random.key(10), (2, config.in_channels, config.image_size, config.image_size))
        got = fn(hj.to_flax(params, config), _nhwc(x), config)
        torch.testing.assert_close(hj.from_jax(got), model.apply(params, {}, x)[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- errors


def test_non_cnn_params_need_a_config():
    params = models.get("rnn", RNNConfig(hidden=4)).init(random.key(11))
    with pytest.raises(ValueError, match="pass config="):
        hj.to_flax(params)


def test_from_flax_with_the_wrong_config_names_the_mismatch():
    config = RNNConfig(hidden=4, bidirectional=True)
    flax = hj.to_flax(models.get("rnn", config).init(random.key(12)), config)
    with pytest.raises(ValueError, match="unexpected"):
        hj.from_flax(flax, RNNConfig(hidden=4))


def test_apply_refuses_unknown_families_and_wrong_configs():
    with pytest.raises(KeyError, match="no JAX twin"):
        hj.apply("nope", {}, jnp.zeros((1, 28, 28, 1)))
    with pytest.raises(TypeError, match="RNNConfig"):
        hj.apply("rnn", {}, jnp.zeros((1, 28, 28, 1)), ViTConfig())


def test_dropout_in_training_needs_a_key():
    _, config, _, params, _ = _setup("vit_mean_dropout_rgb")
    with pytest.raises(ValueError, match="key="):
        hj.vit_apply(hj.to_flax(params, config), jnp.zeros((1, 12, 12, 3)), config, train=True)


# ---------------------------------------------------------------------------------------------- files


FILE_CASES = ["cnn_bn_dropout_nohidden", "rnn_lstm_bi_conv_mean", "vit_mean_dropout_rgb"]
FILE_CASES += ["crnn_lstm_proj_2convs"] if "crnn" in hj.TWINS else []


def test_save_for_jax_is_readable_without_torch_for_every_family(tmp_path):
    paths, expected = {}, {}
    for case in FILE_CASES:
        name, config, _, params, state = _setup(case)
        paths[case] = str(hj.save_for_jax(tmp_path / f"{case}.safetensors", params, config, state=state))
        flat = tree.flatten_names(hj.from_jax(hj.to_flax(params, config)))
        flat.update({hj.STATS_PREFIX + k: v for k, v in tree.flatten_names(state).items()})
        expected[case] = (name, config, flat)
    script = textwrap.dedent(
        f"""
        import json, sys
        from safetensors import safe_open
        from safetensors.numpy import load_file
        out = {{}}
        for case, path in {paths!r}.items():
            flat = load_file(path)
            with safe_open(path, "np") as f:
                meta = json.loads(f.metadata()["hwr"])
            out[case] = {{"meta": meta, "sums": {{k: [list(v.shape), str(v.dtype), float(v.astype("float64").sum())]
                                                for k, v in flat.items()}}}}
        assert "torch" not in sys.modules, "reading the files imported torch"
        print(json.dumps(out))
        """
    )
    seen = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    for case, (name, config, flat) in expected.items():
        meta, sums = seen[case]["meta"], seen[case]["sums"]
        assert meta["format"] == hj.FORMAT and meta["model"] == name and meta["layout"]
        assert models.config_from_dict(name, meta["config"]) == config
        assert set(sums) == set(flat)
        for k, t in flat.items():
            shape, dtype, total = sums[k]
            assert tuple(shape) == tuple(t.shape) and dtype == "float32"
            assert total == pytest.approx(float(t.double().sum()), abs=1e-9)


@pytest.mark.parametrize("case", FILE_CASES)
def test_loaded_file_drives_the_jax_forward(tmp_path, case):
    name, config, model, params, state = _setup(case)
    path = hj.save_for_jax(tmp_path / "m.safetensors", params, config, state=state)
    jparams, stats, meta = hj.load_for_jax(path)
    assert meta["model"] == name
    x = _images(config, random.key(13), 3)
    want, _ = model.apply(params, state, x)
    got, _ = hj.apply(meta["model"], jparams, _nhwc(x), models.config_from_dict(name, meta["config"]), state=stats)
    torch.testing.assert_close(hj.from_jax(got), want, atol=1e-5, rtol=1e-5)
