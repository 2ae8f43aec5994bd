"""Training across frameworks: hwr.random in JAX, and for every family N optax steps in JAX from an hwr init,
brought back and continued in hwr, against the same steps taken in hwr alone."""

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax", reason="JAX interop needs the optional extra: pip install -e '.[jax]'")
optax = pytest.importorskip("optax", reason="JAX interop tests need optax: pip install -e '.[jax]'")
import jax.numpy as jnp

from hwr import losses, models, optim, random, tree
from hwr.data import batches
from hwr.data.batches import synthetic_batches
from hwr.engine import train
from hwr.interop import jax as hj
from hwr.interop.jax import random as jr
from hwr.models.cnn import CNNConfig
from hwr.models.rnn import RNNConfig
from hwr.models.vit import ViTConfig

jax.config.update("jax_default_matmul_precision", "highest")

N, M, LR = 5, 2, 1e-3  # JAX steps, hwr steps after them, Adam's learning rate
PARAM_ATOL = 1e-5  # measured: 1e-7 after 5 steps for every family (float32 rounding, reordered reductions)

# small configs with dropout and batch norm where the family has them: the JAX steps draw hwr's masks
CASES = {
    "cnn_bn_dropout": ("cnn", CNNConfig(channels=(4, 8), hidden=16, norm="batch", dropout=0.3)),
    "rnn_gru_bi_dropout": ("rnn", RNNConfig(hidden=8, num_layers=2, bidirectional=True, dropout=0.2, image_size=14)),
    "rnn_lstm_conv_mean": (
        "rnn",
        RNNConfig(cell="lstm", reader="conv", hidden=8, stem_channels=4, readout="mean", image_size=14),
    ),
    "vit_dropout": ("vit", ViTConfig(patch_size=7, dim=16, depth=2, heads=2, mlp_dim=32, dropout=0.1, image_size=14)),
}


# ---------------------------------------------------------------------------------------------- hwr.random in JAX


@pytest.mark.parametrize("seed", [0, 1, 2**33 + 5])
def test_jax_random_equals_hwr_random_bit_for_bit(seed):
    k, jk = random.key(seed), jr.key(seed)
    assert torch.equal(jr.to_hwr(jk), k)
    assert torch.equal(jr.to_hwr(jr.from_hwr(k)), k)
    assert torch.equal(jr.to_hwr(jr.split(jk, 5)), random.split(k, 5))
    assert torch.equal(jr.to_hwr(jr.fold_in(jk, 123)), random.fold_in(k, 123))
    assert torch.equal(jr.to_hwr(jax.jit(jr.fold_in)(jk, jnp.int32(7))), random.fold_in(k, 7))  # traced data
    assert torch.equal(jr.to_hwr(jr.bits(jk, (4, 3))), random.bits(k, (4, 3)))
    np.testing.assert_array_equal(np.asarray(jr.uniform(jk, (6, 5))), random.uniform(k, (6, 5)).numpy())


# ---------------------------------------------------------------------------------------------- round trip


def _max_err(a, b, skip=lambda name: False) -> float:
    fa, fb = tree.flatten_names(a), tree.flatten_names(b)
    assert fa.keys() == fb.keys()
    return max(((fa[k] - fb[k]).abs().max().item() for k in fa if not skip(k)), default=0.0)


@pytest.mark.parametrize("case", list(CASES))
def test_jax_steps_continue_in_hwr_as_if_hwr_took_them(case):
    name, config = CASES[case]
    model = models.get(name, config)
    batches = synthetic_batches(
        random.key(5), N + M, 8, channels=config.in_channels, size=config.image_size, num_classes=config.num_classes
    )
    opt = optim.adam(LR)
    start = train.init_state(model, opt, random.key(7))
    step = train.train_step(model, opt, losses.cross_entropy)
    hwr_states, hwr_losses, s = [], [], start
    for b in batches:
        s, m = step(s, b)
        hwr_states.append(s)
        hwr_losses.append(float(m["loss"]))

    jopt = optax.adam(LR)
    jstate = hj.from_hwr_state(start, config, jopt)
    jstep = jax.jit(hj.train_step(config, jopt), donate_argnums=0)
    for i, b in enumerate(batches[:N]):
        images = jnp.asarray(b.images.permute(0, 2, 3, 1).numpy())  # uint8 NHWC
        jstate, jm = jstep(jstate, images, jnp.asarray(b.labels.numpy().astype(np.int32)))
        assert abs(float(jm["loss"]) - hwr_losses[i]) < 1e-5

    back = hj.to_hwr_state(jstate, config)
    want = hwr_states[N - 1]
    tree.assert_same_structure(back.params, want.params)
    assert int(back.step) == N and torch.equal(back.key, want.key)
    assert float(back.opt_state[0].count) == float(back.opt_state[1].count) == N

    # ViT's attention key bias has no gradient (softmax ignores a shift shared by all keys): Adam turns the
    # rounding noise in its ~1e-10 gradient into full +-lr steps, different in each framework. Bound it instead.
    dim = getattr(config, "dim", 0)

    def key_bias(n: str) -> bool:
        return n.endswith("attn.qkv.bias")

    skip = key_bias if dim else (lambda n: False)
    assert _max_err(back.params, want.params, skip) < PARAM_ATOL
    assert _max_err(back.opt_state[0].mu, want.opt_state[0].mu, skip) < 1e-5
    assert _max_err(back.opt_state[0].nu, want.opt_state[0].nu, skip) < 1e-7
    assert _max_err(back.model_state, want.model_state) < 1e-6
    for n, t in tree.flatten_names(back.params).items():
        if key_bias(n):
            ref = tree.flatten_names(want.params)[n]
            torch.testing.assert_close(t[:dim], ref[:dim], atol=PARAM_ATOL, rtol=0)  # query
            torch.testing.assert_close(t[2 * dim :], ref[2 * dim :], atol=PARAM_ATOL, rtol=0)  # value
            assert t[dim : 2 * dim].abs().max() <= N * LR * 1.01

    s = back  # continue in hwr: M more steps land where N + M hwr steps do
    for b in batches[N:]:
        s, _ = step(s, b)
    assert _max_err(s.params, hwr_states[-1].params, skip) < PARAM_ATOL


def test_adam_state_from_optax_needs_one_adam():
    with pytest.raises(ValueError, match="ScaleByAdamState"):
        hj.adam_state_from_optax(optax.sgd(0.1).init({"w": jnp.zeros(2)}), CNNConfig())


def test_masked_samples_do_not_count():
    """A padded batch: the JAX loss and its gradient ignore masked samples, as hwr's cross_entropy does."""
    config = CNNConfig(channels=(4,), hidden=0, image_size=8)
    model = models.get("cnn", config)
    b = synthetic_batches(random.key(1), 1, 6, channels=1, size=8, num_classes=10)[0]
    mask = torch.tensor([True, True, True, False, True, False])
    opt, jopt = optim.adam(LR), optax.adam(LR)
    start = train.init_state(model, opt, random.key(2))
    want, m = train.train_step(model, opt, losses.cross_entropy)(start, batches.Batch(b.images, b.labels, mask))
    jstate, jm = jax.jit(hj.train_step(config, jopt))(
        hj.from_hwr_state(start, config, jopt),
        jnp.asarray(b.images.permute(0, 2, 3, 1).numpy()),
        jnp.asarray(b.labels.numpy().astype(np.int32)),
        jnp.asarray(mask.numpy()),
    )
    assert int(jm["count"]) == 4 and abs(float(jm["loss"]) - float(m["loss"])) < 1e-6
    assert _max_err(hj.to_hwr_state(jstate, config).params, want.params) < PARAM_ATOL


def test_train_step_refuses_per_frame_logits():
    from hwr.models.crnn import CRNNConfig

    config = CRNNConfig(channels=(4,), hidden=4, height=8, width_pools=1)
    model = models.get("crnn", config)
    start = train.init_state(model, optim.adam(LR), random.key(3))
    jopt = optax.adam(LR)
    with pytest.raises(ValueError, match="CTC"):
        hj.train_step(config, jopt)(
            hj.from_hwr_state(start, config, jopt), jnp.zeros((2, 8, 12, 1), jnp.uint8), jnp.zeros((2,), jnp.int32)
        )
