"""hwr.interop.jax: DLPack round trips (zero copy), Flax layouts, JAX forward and Adam parity, torch-free files."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

jax = pytest.importorskip("jax", reason="JAX interop needs the optional extra: pip install -e '.[jax]'")
optax = pytest.importorskip("optax", reason="JAX interop tests need optax: pip install -e '.[jax]'")
import jax.numpy as jnp
from tiny import TINY_CNN

from hwr import losses, optim, random, tree
from hwr.data import batches
from hwr.engine import train
from hwr.interop import jax as hj
from hwr.models import cnn

jax.config.update("jax_default_matmul_precision", "highest")

SEED = cnn.CNNConfig()
DEEP_BN = cnn.CNNConfig(channels=(8, 16, 16), convs_per_block=2, norm="batch", hidden=0)
SMALL = TINY_CNN


def _nhwc(x: torch.Tensor) -> jax.Array:
    return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def _equal_trees(a, b) -> bool:
    tree.assert_same_structure(a, b)
    return all(torch.equal(x, y) and x.dtype == y.dtype for x, y in zip(tree.leaves(a), tree.leaves(b)))


# ---------------------------------------------------------------------------------------------- DLPack


def test_to_jax_and_back_is_zero_copy_and_exact():
    params = cnn.model(SEED).init(random.key(0))
    jparams = hj.to_jax(params)
    for t, j in zip(tree.leaves(params), tree.leaves(jparams)):  # torch's pytree keeps the key order
        assert isinstance(j, jax.Array)
        assert j.unsafe_buffer_pointer() == t.data_ptr()  # zero copy
    back = hj.from_jax(jparams)
    for t, b in zip(tree.leaves(params), tree.leaves(back)):
        assert b.data_ptr() == t.data_ptr()
    assert _equal_trees(back, params)


def test_round_trip_of_a_whole_train_state_with_x64():
    model = cnn.model(SMALL)
    state = train.init_state(model, optim.adam(1e-3), random.key(1))
    with jax.enable_x64(True):
        jstate = hj.to_jax(state)
        assert jstate.step.dtype == jnp.int64 and jstate.opt_state[0].count.dtype == jnp.int64
        back = hj.from_jax(jstate)
    assert isinstance(back, train.TrainState)
    assert _equal_trees(back, state)


def test_to_jax_refuses_to_narrow_64_bit_leaves():
    with jax.enable_x64(False), pytest.raises(TypeError, match="jax_enable_x64"):
        hj.to_jax({"step": torch.zeros((), dtype=torch.int64)})


def test_non_contiguous_leaves_become_contiguous_copies():
    base = torch.arange(12.0).reshape(3, 4)
    j = hj.to_jax({"t": base.T, "n": None, "i": 3})
    assert j["n"] is None and j["i"] == 3
    assert (torch.from_dlpack(j["t"]) == base.T).all()


def test_grad_requiring_leaves_are_detached():
    t = torch.ones(3, requires_grad=True)
    assert (torch.from_dlpack(hj.to_jax([t])[0]) == 1).all()


# ---------------------------------------------------------------------------------------------- Flax layouts


@pytest.mark.parametrize("config", [SEED, DEEP_BN, SMALL], ids=["seed", "deep_bn", "small"])
def test_flax_round_trip_is_bitwise(config):
    params = cnn.model(config).init(random.key(2))
    flax = hj.to_flax(params, config)
    assert _equal_trees(hj.from_flax(flax, config), params)
    assert _equal_trees(hj.from_flax(flax), params)  # layout inferred from the kernels


def test_flax_layouts():
    params = cnn.model(SEED).init(random.key(3))
    flax = hj.to_flax(params, SEED)
    assert flax["block2"]["conv1"]["kernel"].shape == (3, 3, 32, 64)  # HWIO
    assert flax["head"]["kernel"].shape == (128, 10)  # (in, out)
    k = params["block2"]["conv1"]["kernel"]
    assert float(flax["block2"]["conv1"]["kernel"][1, 2, 5, 7]) == float(k[7, 5, 1, 2])
    # first dense: NHWC row (h, w, c) is NCHW column (c, h, w)
    fc = params["fc"]["kernel"]  # (128, 64*7*7)
    h, w, c, o = 3, 5, 11, 17
    assert float(flax["fc"]["kernel"][(h * 7 + w) * 64 + c, o]) == float(fc[o, c * 49 + h * 7 + w])


def test_from_flax_accepts_sorted_keys_and_numpy():
    """A Flax user's dict (keys sorted by jax.tree_util) of NumPy arrays still gives hwr's structure."""
    params = cnn.model(DEEP_BN).init(random.key(4))
    resorted = jax.tree_util.tree_map(lambda a: jax.device_get(a), hj.to_flax(params))  # sorted dicts, numpy
    assert _equal_trees(hj.from_flax(resorted, DEEP_BN), params)


def test_to_flax_names_the_fix_when_the_shape_cannot_be_inferred():
    params = {"block1": {"conv1": {"kernel": torch.zeros(6, 1, 3, 3)}}, "head": {"kernel": torch.zeros(10, 7)}}
    with pytest.raises(ValueError, match="pass config"):
        hj.to_flax(params)


# ---------------------------------------------------------------------------------------------- forward parity


@pytest.mark.parametrize("config", [SEED, DEEP_BN], ids=["seed", "deep_bn"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train_stats"])
def test_jax_forward_equals_torch(config, training):
    model = cnn.model(config)
    params = model.init(random.key(5))
    state = model.init_state()
    if config.norm == "batch":  # non-trivial running statistics
        state = tree.map(lambda s: s + 0.1 * random.uniform(random.key(6), s.shape), state)
    x = random.uniform(random.key(7), (6, 1, 28, 28))
    want, _ = model.apply(params, state, x, train=training)
    got = hj.cnn_apply(hj.to_flax(params, config), _nhwc(x), config, state=hj.to_jax(state), train=training)
    torch.testing.assert_close(hj.from_jax(got), want, atol=1e-5, rtol=1e-5)


def test_jax_batch_norm_in_inference_needs_state():
    params = hj.to_flax(cnn.model(DEEP_BN).init(random.key(8)))
    with pytest.raises(ValueError, match="state="):
        hj.cnn_apply(params, jnp.zeros((1, 28, 28, 1)), DEEP_BN)


# ---------------------------------------------------------------------------------------------- optimizer parity


def test_optax_adam_matches_hwr_adam_over_steps():
    params = cnn.model(SMALL).init(random.key(9))
    opt, jopt = optim.adam(1e-3), optax.adam(1e-3)
    state, jstate = opt.init(params), jopt.init(hj.to_jax(params))
    jparams = hj.to_jax(params)

    @jax.jit
    def jstep(g, s, p):
        u, s = jopt.update(g, s, p)
        return optax.apply_updates(p, u), s

    for i in range(3):
        grads = tree.map(lambda p, i=i: random.normal(random.fold_in(random.key(10), i), p.shape), params)
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
        jparams, jstate = jstep(hj.to_jax(grads), jstate, jparams)
        got = tree.flatten_names(hj.from_jax(jparams))  # optax rebuilds dicts with sorted keys: compare by name
        for name, a in tree.flatten_names(params).items():
            torch.testing.assert_close(got[name], a, atol=1e-5, rtol=0)


def test_one_jax_train_step_matches_one_hwr_step():
    """grad of the JAX forward + optax.adam from the same params and batch == hwr's train_step (eager)."""
    model = cnn.model(SMALL)
    x = random.uniform(random.key(11), (8, 1, 28, 28))
    labels = random.randint(random.key(12), (8,), 0, 10)
    batch = batches.Batch(x, labels, torch.ones(8, dtype=torch.bool))
    state = train.init_state(model, optim.adam(1e-3), random.key(13))
    new, metrics = train.train_step(model, optim.adam(1e-3), losses.cross_entropy)(state, batch)

    jopt = optax.adam(1e-3)
    jparams = hj.to_flax(state.params, SMALL)
    jx, jy = _nhwc(x), jnp.asarray(labels.numpy()).astype(jnp.int32)

    def loss(p):
        logits = hj.cnn_apply(p, jx, SMALL)
        return optax.softmax_cross_entropy_with_integer_labels(logits, jy).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(jparams)  # jit: op-by-op JAX autodiff is slow
    updates, _ = jopt.update(grads, jopt.init(jparams), jparams)
    got = hj.from_flax(optax.apply_updates(jparams, updates), SMALL)
    assert abs(float(value) - float(metrics["loss"])) < 1e-5
    for a, b in zip(tree.leaves(new.params), tree.leaves(got)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- files


def test_save_for_jax_is_readable_without_torch(tmp_path):
    params = cnn.model(SEED).init(random.key(14))
    path = hj.save_for_jax(tmp_path / "model.safetensors", params, SEED)
    script = textwrap.dedent(
        f"""
        import json, sys
        from safetensors import safe_open
        from safetensors.numpy import load_file
        flat = load_file({str(path)!r})
        with safe_open({str(path)!r}, "np") as f:
            meta = json.loads(f.metadata()["hwr"])
        assert "torch" not in sys.modules, "reading the file imported torch"
        print(json.dumps({{"meta": meta, "sums": {{k: [list(v.shape), str(v.dtype), float(v.astype("float64").sum())]
                                                   for k, v in flat.items()}}}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["meta"]["format"] == hj.FORMAT and seen["meta"]["model"] == "cnn"
    assert (
        cnn.CNNConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in seen["meta"]["config"].items()}) == SEED
    )
    flax = tree.flatten_names(hj.from_jax(hj.to_flax(params, SEED)))
    assert set(seen["sums"]) == set(flax)
    for name, t in flax.items():
        shape, dtype, total = seen["sums"][name]
        assert tuple(shape) == tuple(t.shape) and dtype == "float32"
        assert total == pytest.approx(float(t.double().sum()), abs=1e-9)


def test_saved_file_drives_the_jax_forward(tmp_path):
    from safetensors.flax import load_file

    params = cnn.model(SEED).init(random.key(15))
    path = hj.save_for_jax(tmp_path / "m.safetensors", params, SEED)
    flat = load_file(str(path))
    jparams = tree.unflatten_names(dict(flat))
    x = random.uniform(random.key(16), (4, 1, 28, 28))
    want, _ = cnn.model(SEED).apply(params, {}, x)
    got = hj.cnn_apply(jparams, _nhwc(x), SEED)
    torch.testing.assert_close(hj.from_jax(got), want, atol=1e-5, rtol=1e-5)
