import pytest
import torch

from hwr import finetune, models, optim, random, tree
from hwr.models.cnn import CNNConfig


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
    opt = optim.chain(optim.adamw(1e-2, weight_decay=0.1), optim.scale_by_multipliers(finetune.lr_multipliers(p, "head")))
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
