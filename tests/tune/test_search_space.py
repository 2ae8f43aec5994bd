"""The default study's search space: every dimension reaches the run's config, and the architecture dimensions
(which source of the zoo, which head) reach the model a fine-tune builds."""

import dataclasses
import json
import shutil

import optuna
import pytest
from tiny import EAGER

from hwr import recipes, tune
from hwr.config import to_dict
from hwr.models.cnn import CNNConfig
from hwr.models.rnn import RNNConfig
from hwr.tasks import digits
from hwr.tasks.digits.config import RunConfig, SelfTrainConfig

SPEC = tune.load_spec("optdigits_longtail")


def _context(tmp_path, sources):
    return tune.StudyContext(sources["cnn"], tmp_path, sources=sources)


def _config_only_zoo(tmp_path):
    out = {}
    for name, recipe in SPEC_ZOO.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(to_dict(recipes.get(recipe))))
        out[name] = tmp_path / name
    return out


SPEC_ZOO = {"cnn": "fast", "cnn_bn": "fast_bn", "rnn": "fast_rnn", "vit": "fast_vit"}


def _other(dist: optuna.distributions.BaseDistribution, value):
    """A valid value of ``dist`` other than ``value``."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return next(c for c in dist.choices if c != value)
    return dist.high if value != dist.high else dist.low


def test_every_dimension_reaches_the_config(tmp_path):
    """Random points of the space; for each, every parameter it used is moved to another value with the rest
    fixed: the RunConfig must change (a dimension that changed nothing would be a dead knob of the search)."""
    assert {name for name in SPEC.zoo} == set(SPEC_ZOO)
    assert SPEC.zoo["rnn"] == recipes.get("fast_rnn") and SPEC.zoo["cnn"] == SPEC.source  # one pretraining each
    ctx = _context(tmp_path, _config_only_zoo(tmp_path))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    trials = []
    for _ in range(60):
        t = study.ask()
        SPEC.suggest(t, ctx)
        study.tell(t, 0.0)
        trials.append(study.trials[-1])
    every = {}
    for t in trials:
        every |= {k: v for k, v in t.params.items() if k not in every}
    dists = {k: d for t in trials for k, d in t.distributions.items()}
    assert {"source", "head", "head_width", "dropout", "trainable", "weighting", "mix", "rotation", "wise"} <= set(
        dists
    )
    assert {"self_train", "pseudo_threshold"} <= set(dists)  # optdigits-lt has unlabelled images
    reached = set()
    for t in trials[:12]:
        base = to_dict(SPEC.suggest(optuna.trial.FixedTrial({**every, **t.params}), ctx))
        for name, value in t.params.items():
            moved = {**every, **t.params, name: _other(dists[name], value)}
            assert to_dict(SPEC.suggest(optuna.trial.FixedTrial(moved), ctx)) != base, name
            reached.add(name)
    assert reached >= {"source", "head", "dropout", "lr", "epochs", "sampling", "self_train"}


def test_self_training_is_searched_only_where_the_target_has_unlabelled_images(tmp_path):
    """The default study offers self-training on optdigits-lt (its unused pool) and on a folder with
    ``unlabeled/``, not on a folder without; its start self-trains where it can, the same recipe from the labelled
    images alone is enqueued too, and the oracle (every balanced image labelled) never self-trains."""
    import numpy as np
    from PIL import Image

    from studies import optdigits_longtail as study

    zoo = _config_only_zoo(tmp_path)
    for split, n in (("train", 3), ("test", 2)):
        for c in range(2):
            for k in range(n):
                a = np.full((20, 20), 255, np.uint8)
                a[3:17, 4 + 5 * c + k : 7 + 5 * c + k] = 0
                (tmp_path / "f" / split / str(c)).mkdir(parents=True, exist_ok=True)
                Image.fromarray(a).save(tmp_path / "f" / split / str(c) / f"{k}.png")
    shutil.copytree(tmp_path / "f", tmp_path / "g")  # a folder that stays without unlabeled/
    fixed = optuna.trial.FixedTrial(study.INITIAL[0])
    data = tune.StudyContext(zoo["cnn"], tmp_path, f"folder:{tmp_path / 'f'}", sources=zoo)
    assert not SPEC.suggest(fixed, data).self_train.on  # no unlabeled/: nothing to self-train on
    (tmp_path / "f" / "unlabeled").mkdir()
    Image.fromarray(np.full((20, 20), 255, np.uint8) - 255 * np.eye(20, dtype=np.uint8)).save(
        tmp_path / "f" / "unlabeled" / "u.png"
    )
    study._has_unlabeled.cache_clear()
    cfg = SPEC.suggest(fixed, data)
    assert cfg.self_train.threshold == 0.9
    lt = SPEC.suggest(optuna.trial.FixedTrial(study.INITIAL[0]), _context(tmp_path, zoo))
    assert lt.self_train.threshold == 0.9  # the start self-trains where it can
    labelled = SPEC.suggest(optuna.trial.FixedTrial(study.INITIAL[2]), _context(tmp_path, zoo))
    assert labelled == dataclasses.replace(lt, self_train=SelfTrainConfig())  # ...and is enqueued without it too
    assert study.baselines(_context(tmp_path, zoo))["start_labelled_only"] == labelled  # a row of the evaluation
    assert "start_labelled_only" not in study.baselines(
        tune.StudyContext(zoo["cnn"], tmp_path, f"folder:{tmp_path / 'g'}", sources=zoo)
    )
    assert not study.oracle(lt, _context(tmp_path, zoo)).self_train.on


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """Two trained sources of different families (tiny, eager)."""
    root = tmp_path_factory.mktemp("zoo")
    small = dict(epochs=1, batch_size=64, limit_train=128, limit_test=64)
    out = {}
    for name, family, mc in (
        ("cnn", "cnn", CNNConfig(channels=(4, 8), hidden=16)),
        ("rnn", "rnn", RNNConfig(hidden=8)),
    ):
        digits.run(RunConfig(model=family, model_config=mc, **small), root / name, execution=EAGER, write_figures=False)
        out[name] = root / name
    return out


@pytest.mark.parametrize(
    "source, head, width, fresh, family",
    [
        ("cnn", "source", None, [], "cnn"),
        ("cnn", "fresh", None, ["head.bias", "head.kernel"], "cnn"),
        ("cnn", "hidden", 40, ["fc.bias", "fc.kernel", "head.bias", "head.kernel"], "cnn"),
        ("rnn", "source", None, [], "rnn"),
        ("rnn", "hidden", 33, ["fc.bias", "fc.kernel", "head.bias", "head.kernel"], "rnn"),
    ],
)
def test_the_architecture_reaches_the_model(tiny_zoo, tmp_path, source, head, width, fresh, family):
    params = {"source": source, "head": head, "dropout": 0.0, **({"head_width": width} if width else {})}
    untuned = dict(SPEC.initial[2])  # the start from the labelled images alone: prepare needs no teacher
    cfg = SPEC.suggest(optuna.trial.FixedTrial({**untuned, **params}), _context(tmp_path, tiny_zoo))
    cfg = dataclasses.replace(cfg, limit_train=64, epochs=1)
    p = digits.prepare(cfg)
    assert p.model.name == family and sorted(p.reinitialised) == fresh
    if width:
        assert p.params["fc"]["kernel"].shape[0] == width
    assert cfg.finetune.source == str(tiny_zoo[source])
