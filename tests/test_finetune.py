import pytest
import torch

from hwr import models, optim, random, tree
from hwr.models.cnn import CNNConfig
from hwr.tasks.digits import finetune


def test_transfer_keeps_matching_and_reinits_changed():
    src = models.get("cnn").init(random.key(0))
    flat = tree.flatten_names(src)
    fresh = models.get("cnn", CNNConfig(hidden=64, num_classes=5)).init(random.key(1))
    params, kept_fresh = finetune.transfer(flat, fresh)
    assert torch.equal(params["block1"]["conv1"]["kernel"], src["block1"]["conv1"]["kernel"])
    assert torch.equal(params["block2"]["conv1"]["bias"], src["block2"]["conv1"]["bias"])
    assert sorted(kept_fresh) == ["fc.bias", "fc.kernel", "head.bias", "head.kernel"]
    assert torch.equal(params["head"]["kernel"], fresh["head"]["kernel"])
    # the source is not aliased: later updates cannot leak back
    assert params["block1"]["conv1"]["kernel"].data_ptr() != src["block1"]["conv1"]["kernel"].data_ptr()


def test_transfer_reinit_forces_fresh():
    src = models.get("cnn").init(random.key(0))
    fresh = models.get("cnn").init(random.key(1))
    params, kept = finetune.transfer(tree.flatten_names(src), fresh, reinit=("head",))
    assert kept == ["head.kernel", "head.bias"]
    assert torch.equal(params["fc"]["kernel"], src["fc"]["kernel"])


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
    model = models.get("cnn", CNNConfig(channels=(4, 8), hidden=16))
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
