"""hwr.tasks.digits.finetune: which parameters train (groups, learning-rate multipliers, the anchored mask, WiSE-FT
interpolation, head adjustments); the long-tail levers inside the train step (mixup / CutMix targets, deferred
re-weighting by the step counter), compiled equal to eager; and the post-training stages (WiSE-FT selection, cRT,
head adjustment), each checked against what it is defined to compute."""

import dataclasses

import pytest
import torch
from tiny import TINY_CNN

from hwr import losses, models, optim, random, tree
from hwr.data import batches as bt
from hwr.data import mix
from hwr.data.mix import MixConfig
from hwr.engine import train
from hwr.models.cnn import CNNConfig
from hwr.tasks.digits import finetune
from hwr.tasks.digits.config import ClassifierConfig


def test_groups_and_multipliers():
    p = models.get("cnn", CNNConfig(channels=(8, 8, 8))).init(random.key(0))
    g = finetune.top_level_groups(p)
    assert g == {"head": ["head"], "last": ["block3", "fc"], "early": ["block1", "block2"]}
    m = finetune.lr_multipliers(p, "last", 0.1)
    assert m["head"]["kernel"] == 1.0 and m["fc"]["bias"] == 0.1 and m["block3"]["conv1"]["kernel"] == 0.1
    assert m["block1"]["conv1"]["kernel"] == 0.0
    assert finetune.lr_multipliers(p, "head")["fc"]["kernel"] == 0.0
    assert finetune.lr_multipliers(p, "all", 0.5)["block1"]["conv1"]["bias"] == 0.5


def test_frozen_leaves_do_not_move():
    model = models.get("cnn", TINY_CNN)
    p = model.init(random.key(0))
    opt = optim.chain(
        optim.adamw(1e-2, weight_decay=0.1), optim.scale_by_multipliers(finetune.lr_multipliers(p, "head"))
    )
    s = opt.init(p)
    g = tree.map(torch.ones_like, p)
    u, _ = opt.update(g, s, p)
    new = optim.apply_updates(p, u)
    assert torch.equal(new["block1"]["conv1"]["kernel"], p["block1"]["conv1"]["kernel"])
    assert torch.equal(new["fc"]["kernel"], p["fc"]["kernel"])
    assert not torch.equal(new["head"]["kernel"], p["head"]["kernel"])


def test_errors():
    with pytest.raises(ValueError, match="trainable"):
        finetune.lr_multipliers({"head": {}}, "middle")
    with pytest.raises(ValueError, match="no 'head'"):
        finetune.top_level_groups({"block1": {}})


def test_interpolate_is_wise_ft_and_keeps_fresh_leaves():
    from hwr.tasks.digits.finetune import anchored_mask, interpolate

    src = {"body": {"w": torch.zeros(3)}, "head": {"kernel": torch.zeros(2, 3)}}
    ft = {"body": {"w": torch.ones(3)}, "head": {"kernel": torch.full((2, 3), 4.0)}}
    mid = interpolate(src, ft, 0.25)
    assert torch.allclose(mid["body"]["w"], torch.full((3,), 0.25)) and torch.allclose(
        mid["head"]["kernel"], torch.ones(2, 3)
    )
    assert torch.equal(interpolate(src, ft, 1.0)["body"]["w"], ft["body"]["w"])
    assert torch.equal(interpolate(src, ft, 0.0)["body"]["w"], src["body"]["w"])
    mask = anchored_mask(ft, ["head.kernel"])
    assert mask == {"body": {"w": True}, "head": {"kernel": False}}
    kept = interpolate(src, ft, 0.5, mask)
    assert (
        torch.equal(kept["head"]["kernel"], ft["head"]["kernel"]) and kept["head"]["kernel"] is not ft["head"]["kernel"]
    )
    with pytest.raises(ValueError, match="alpha"):
        interpolate(src, ft, 1.5)


def test_tau_normalize_and_folded_logit_adjustment_change_logits_as_defined():
    from hwr.losses import posthoc_adjust
    from hwr.tasks.digits.finetune import fold_logit_adjustment, tau_normalize

    g = torch.Generator().manual_seed(0)
    params = {
        "fc": {"kernel": torch.randn(4, 3, generator=g)},
        "head": {
            "kernel": torch.randn(5, 4, generator=g) * torch.arange(1, 6)[:, None],
            "bias": torch.randn(5, generator=g),
        },
    }
    before = {k: {n: t.clone() for n, t in v.items()} for k, v in params.items()}
    unit = tau_normalize(params, 1.0)
    assert torch.allclose(unit["head"]["kernel"].norm(dim=1), torch.ones(5))
    assert torch.equal(tau_normalize(params, 0.0)["head"]["kernel"], params["head"]["kernel"])
    half = tau_normalize(params, 0.5)["head"]["kernel"].norm(dim=1)
    assert torch.allclose(half, params["head"]["kernel"].norm(dim=1).sqrt())
    prior = torch.tensor([0.4, 0.3, 0.2, 0.07, 0.03])
    folded = fold_logit_adjustment(params, prior, 0.8)
    x = torch.randn(6, 4, generator=g)
    lin = lambda p: x @ p["head"]["kernel"].T + p["head"]["bias"]
    assert torch.allclose(lin(folded), posthoc_adjust(lin(params), prior, 0.8), atol=1e-6)
    assert all(torch.equal(params[k][n], before[k][n]) for k in params for n in params[k])  # pure
    with pytest.raises(ValueError, match="head"):
        tau_normalize({"fc": params["fc"]}, 1.0)
    with pytest.raises(ValueError, match="prior"):
        fold_logit_adjustment(params, prior[:3], 1.0)


MODEL = models.get("cnn", TINY_CNN)
COUNTS = torch.tensor([40, 20, 10, 5, 3, 2, 2, 1, 1, 1])


def _batch(seed=0, b=16):
    g = torch.Generator().manual_seed(seed)
    return bt.Batch(
        torch.randint(0, 256, (b, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (b,), generator=g),
        torch.ones(b, dtype=torch.bool),
    )


def _state(opt):
    return train.init_state(MODEL, opt, random.key(0))


def test_mixed_step_differentiates_the_mixture_of_the_two_labels():
    opt = optim.sgd(0.1)
    cfg = MixConfig(mixup=0.4, cutmix=1.0)
    step = train.train_step(MODEL, opt, losses.cross_entropy, mix=cfg)
    state, batch = _state(opt), _batch()
    new, m = step(state, batch)
    # the same computation by hand: the step's keys, the mixed images, soft targets, one SGD step
    k_aug, k_model, k_mix = random.split(random.fold_in(state.key, state.step), 3)
    x, perm, lam = mix.mix_images(k_mix, bt.to_float(k_aug, batch.images), cfg)
    target = mix.mixed_targets(batch.labels, perm, lam, 10)

    def loss_of(p):
        return losses.cross_entropy(MODEL.apply(p, {}, x, key=k_model, train=True)[0], target)

    grads = torch.func.grad(loss_of)(state.params)
    want = tree.map(lambda p, g: p - 0.1 * g, state.params, grads)
    for a, b in zip(tree.leaves(new.params), tree.leaves(want)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert float(m["loss"]) == pytest.approx(float(loss_of(state.params)), rel=1e-5)


def test_deferred_weights_switch_on_inside_the_step():
    opt = optim.sgd(0.0)  # parameters never move, so the loss depends on the step counter alone
    drw = losses.make_loss(losses.LossConfig("inverse", defer=0.5), COUNTS.tolist(), total_steps=4)
    step = train.train_step(MODEL, opt, drw)
    plain = losses.make_loss(losses.LossConfig())
    weighted = losses.make_loss(losses.LossConfig("inverse"), COUNTS.tolist())
    state, batch = _state(opt), _batch(1)
    logits = MODEL.apply(state.params, {}, bt.to_float(None, batch.images), train=True)[0]  # no dropout: same
    seen = []
    for _ in range(4):
        state, m = step(state, batch)
        seen.append(float(m["loss"]))
    assert seen[:2] == pytest.approx([float(plain(logits, batch.labels))] * 2, rel=1e-5)
    assert seen[2:] == pytest.approx([float(weighted(logits, batch.labels))] * 2, rel=1e-5)


@pytest.mark.slow
def test_levers_compile_in_one_graph_and_equal_eager():
    """Mixup, CutMix and deferred re-weighting trace into one graph (AOT autograd's: no code generation) that
    trains as eager does. Inductor's numerics of the same levers inside a compiled train step are
    tests/tune/test_trial_compiles.py's (a trial with every lever on trains to the same figures eagerly and
    compiled): a second cold inductor build of them here cost the CI about three minutes under load."""
    opt = optim.sgd(0.1)  # SGD keeps rounding differences linear (Adam's 1/sqrt(v) magnifies them where g ~ 0)
    drw = losses.make_loss(losses.LossConfig("logit_adjust", defer=0.5), COUNTS.tolist(), total_steps=4)
    step = train.train_step(MODEL, opt, drw, mix=MixConfig(mixup=0.4, cutmix=1.0, prob=0.7))
    compiled = torch.compile(step, fullgraph=True, dynamic=False, backend="aot_eager")
    state, batch = _state(opt), _batch(2)
    se, sc = state, state
    for _ in range(3):
        se, me = step(se, batch)
        sc, mc = compiled(sc, batch)
    for a, b in zip(tree.leaves(se.params), tree.leaves(sc.params)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mc["loss"], me["loss"], atol=1e-5, rtol=1e-4)
    expl = torch._dynamo.explain(step)(state, batch)
    assert expl.graph_count == 1 and expl.graph_break_count == 0


def _params(seed):
    return MODEL.init(random.key(seed))


def test_wise_select_picks_the_best_alpha_and_scores_every_one():
    src, ft = _params(1), _params(2)
    anchored = tree.map(lambda _: True, src)
    target = finetune.interpolate(src, ft, 0.3)
    score = lambda p: -float(sum(((a - b) ** 2).sum() for a, b in zip(tree.leaves(p), tree.leaves(target))))
    alpha, params, scores = finetune.wise_select(src, ft, anchored, score)
    assert alpha == pytest.approx(0.3) and set(scores) == set(finetune.WISE_ALPHAS)
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(params), tree.leaves(target)))
    tie = finetune.wise_select(src, ft, anchored, lambda p: 1.0)[0]
    assert tie == 1.0  # ties go to the fine-tuned end


def test_crt_retrains_only_the_head_on_balanced_batches():
    params = _params(3)
    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([0] * 60 + [1] * 6 + [2] * 2)
    images = torch.randint(0, 256, (68, 1, 28, 28), generator=g, dtype=torch.uint8)
    images[labels == 1] //= 4  # make the classes separable by brightness
    images[labels == 2] = 255
    before = tree.map(lambda t: t.clone(), params)
    out = finetune.retrain_classifier(
        MODEL, params, {}, random.key(5), images, labels, transform=bt.to_float, epochs=40, batch_size=16, lr=1e-1
    )
    for name, leaf in tree.flatten_names(out).items():
        same = torch.equal(leaf, tree.flatten_names(before)[name])
        assert same == (not name.startswith("head.")), name
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(params), tree.leaves(before)))  # pure
    pred = MODEL.apply(out, {}, bt.to_float(None, images))[0].argmax(-1)
    recall = [float((pred[labels == c] == c).float().mean()) for c in range(3)]
    assert min(recall) > 0.6  # the rare classes are learnt: balanced batches, not the 88% head class


def test_adjust_head_applies_tau_norm_then_posthoc():
    params = _params(6)
    out, done = finetune.adjust_head(params, COUNTS, ClassifierConfig(tau_norm=1.0, posthoc_tau=0.5))
    want = finetune.fold_logit_adjustment(finetune.tau_normalize(params, 1.0), COUNTS / COUNTS.sum(), 0.5)
    assert done == {"tau_norm": 1.0, "posthoc_tau": 0.5}
    for a, b in zip(tree.leaves(out), tree.leaves(want)):
        torch.testing.assert_close(a, b)
    same, nothing = finetune.adjust_head(params, COUNTS, ClassifierConfig())
    assert same is params and nothing == {}


def test_classifier_config_validates():
    with pytest.raises(ValueError, match="classifier"):
        ClassifierConfig(crt_epochs=-1)
    assert dataclasses.replace(ClassifierConfig(), crt_epochs=2).is_identity() is False
