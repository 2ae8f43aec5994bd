"""hwr.config: the exact round trip of a RunConfig through JSON (every nested config, tuples back as tuples, every
family's model config, every recipe), and the refusals: unknown keys at any depth, a value that is not an object."""

import json

import pytest

from hwr import models, recipes
from hwr.config import ConfigTypeError, DataSettings, from_dict, to_dict
from hwr.data.augment import AugmentConfig
from hwr.data.mix import MixConfig
from hwr.engine.execution import LEGACY_EXECUTION_KEYS
from hwr.losses import LossConfig
from hwr.optim import OptimConfig
from hwr.tasks.digits.config import ClassifierConfig, FinetuneConfig, RunConfig


def _through_json(cfg: RunConfig) -> RunConfig:
    return from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg))))


def _everything_set(model: str = "cnn") -> RunConfig:
    """A config with every nested config away from its defaults."""
    model_config = {
        "cnn": models.config_from_dict("cnn", {"channels": [8, 16], "hidden": 32, "norm": "batch"}),
        "rnn": models.config_from_dict("rnn", {"cell": "lstm", "bidirectional": True, "hidden": 16}),
        "vit": models.config_from_dict("vit", {"patch_size": 4, "pool": "mean", "dim": 16, "heads": 2}),
        "crnn": models.config_from_dict("crnn", {"channels": [4, 8], "encoder": "lstm", "hidden": 6}),
    }[model]
    return RunConfig(
        model=model,
        model_config=model_config,
        dataset="optdigits-lt:ratio=50,order=2",
        epochs=3,
        batch_size=64,
        optim=OptimConfig(name="adamw", lr=3e-3, schedule="onecycle", weight_decay=0.05, clip_norm=1.0),
        augment=AugmentConfig(rotation=10.0, translate=2.0, scale=0.1, erase_prob=0.5, erase_scale=(0.05, 0.2)),
        loss=LossConfig(weighting="effective", beta=0.99, label_smoothing=0.1, defer=0.5),
        finetune=FinetuneConfig(
            source="runs/src", trainable="last", backbone_lr_mult=0.1, reinit=("head", "fc"), l2sp=0.01, wise=True
        ),
        seed=7,
        validation="heldout",
        sampling="sqrt",
        mix=MixConfig(mixup=0.2, cutmix=1.0, prob=0.5),
        classifier=ClassifierConfig(crt_epochs=2, crt_lr=1e-2, tau_norm=1.0, posthoc_tau=0.5),
        limit_train=500,
        limit_test=100,
        recipe="custom",
    )


def test_default_round_trips():
    assert _through_json(RunConfig()) == RunConfig()
    assert RunConfig().finetune is None and _through_json(RunConfig()).model_config is None


@pytest.mark.parametrize("model", models.names())
def test_every_nested_config_round_trips_exactly(model):
    cfg = _everything_set(model)
    back = _through_json(cfg)
    assert back == cfg
    for nested in ("optim", "augment", "loss", "finetune", "mix", "classifier", "model_config"):
        assert type(getattr(back, nested)) is type(getattr(cfg, nested)), nested
    assert to_dict(back) == to_dict(cfg)


def test_tuples_come_back_as_tuples():
    back = _through_json(_everything_set())
    assert back.finetune.reinit == ("head", "fc") and isinstance(back.finetune.reinit, tuple)
    assert back.augment.erase_scale == (0.05, 0.2) and isinstance(back.augment.erase_scale, tuple)
    assert back.model_config.channels == (8, 16) and isinstance(back.model_config.channels, tuple)
    assert json.loads(json.dumps(to_dict(_everything_set())))["finetune"]["reinit"] == ["head", "fc"]


@pytest.mark.parametrize("name", sorted(n for n, c in recipes.RECIPES.items() if isinstance(c, RunConfig)))
def test_every_run_recipe_round_trips(name):
    cfg = recipes.get(name)
    assert _through_json(cfg) == cfg


def test_unknown_keys_are_refused_at_every_depth():
    good = to_dict(_everything_set())
    for where, bad in [
        ("RunConfig", {**good, "epoch": 3}),
        ("OptimConfig", {**good, "optim": {**good["optim"], "learning_rate": 1.0}}),
        ("FinetuneConfig", {**good, "finetune": {**good["finetune"], "frozen": True}}),
        ("AugmentConfig", {**good, "augment": {**good["augment"], "rot": 3}}),
        ("cnn config", {**good, "model_config": {**good["model_config"], "chanels": [4]}}),
    ]:
        with pytest.raises(ValueError, match=rf"unknown {where} field"):
            from_dict(RunConfig, bad)


def test_not_an_object_is_refused_and_no_type_is_special_cased():
    with pytest.raises(TypeError, match="RunConfig expects a JSON object"):
        from_dict(RunConfig, [1, 2])
    with pytest.raises(TypeError, match="OptimConfig expects a JSON object"):
        from_dict(OptimConfig, "adam")
    old = {**to_dict(RunConfig()), **dict.fromkeys(LEGACY_EXECUTION_KEYS)}  # a config.json from before Execution
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        from_dict(RunConfig, old)  # the run folder drops these (tests/test_runs.py), the round trip does not


def test_data_settings_default_and_expand(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert DataSettings() == DataSettings(tmp_path / ".cache" / "hwr", True)
    assert DataSettings("~/d", False).root == tmp_path / "d"


def test_invalid_values_are_refused_on_the_way_back():
    d = to_dict(_everything_set())
    with pytest.raises(ValueError, match="trainable"):
        from_dict(RunConfig, {**d, "finetune": {**d["finetune"], "trainable": "some"}})
    with pytest.raises(ValueError, match="defer"):
        from_dict(RunConfig, {**d, "loss": {**d["loss"], "defer": 1.0}})


def test_wrong_types_name_the_field_and_the_type_wanted():
    good = to_dict(RunConfig())
    cases = [
        ({"epochs": "3"}, r"epochs must be an int, got '3' \(str\)"),
        ({"epochs": True}, r"epochs must be an int, got True \(bool\)"),
        ({"optim": {**good["optim"], "lr": "abc"}}, r"optim\.lr must be a float, got 'abc' \(str\)"),
        ({"augment": {**good["augment"], "hflip": 1}}, r"augment\.hflip must be true or false, got 1 \(int\)"),
        ({"optim": 3}, r"optim must be a JSON object \(OptimConfig\), got 3 \(int\)"),
        ({"augment": {**good["augment"], "erase_scale": [0.1, "x"]}}, r"augment\.erase_scale\[1\] must be a float"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigTypeError, match=message):
            from_dict(RunConfig, {**good, **change})
    assert from_dict(RunConfig, {**good, "optim": {**good["optim"], "lr": 1}}).optim.lr == 1  # an int is a float
    assert to_dict(from_dict(RunConfig, good)) == good  # checked, never converted


def test_a_hand_edited_config_json_is_one_line_naming_the_field(tmp_path):
    from hwr import runs

    (tmp_path / "config.json").write_text(json.dumps({**to_dict(RunConfig()), "epochs": "3"}))
    with pytest.raises(runs.RunError, match=r"config\.json is not a valid digits config: epochs must be an int"):
        runs.read_config(tmp_path, RunConfig)
