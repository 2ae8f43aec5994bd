"""``hwr.tasks.digits.training.run`` options that change how a run computes but not what (the channels-last memory format, an
``Execution`` choice), the validation protocols, and the long-tail levers reaching the run and its record."""

import dataclasses
import json

import pytest
import torch
from tiny import EAGER

from hwr import checkpoint, metrics, random, runs, tree
from hwr.data import splits
from hwr.data.mix import MixConfig
from hwr.engine import train
from hwr.engine.execution import Execution
from hwr.losses import LossConfig
from hwr.models.cnn import CNNConfig
from hwr.tasks import digits as experiment
from hwr.tasks.digits import finetune
from hwr.tasks.digits.config import ClassifierConfig, FinetuneConfig, RunConfig

SMALL = dict(
    model_config=CNNConfig(channels=(8, 16), hidden=32), epochs=1, batch_size=64, limit_train=640, limit_test=200
)


def test_channels_last_run_equals_contiguous_run(tmp_path):
    trained = {}
    for fmt in ("contiguous", "channels_last"):
        out = tmp_path / fmt
        experiment.run(RunConfig(**SMALL), out, execution=dataclasses.replace(EAGER, memory_format=fmt))
        trained[fmt] = checkpoint.load_flat(out / runs.CHECKPOINT)[0]
        assert json.loads((out / runs.METRICS).read_text())["execution"]["memory_format"] == fmt
        assert "memory_format" not in json.loads((out / runs.CONFIG).read_text())  # not the run's identity
    a, b = trained["contiguous"], trained["channels_last"]
    assert a.keys() == b.keys()
    for k in a:  # same function, sums in another order: equal up to float rounding after 9 Adam steps
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("params."))  # it really ran NHWC


def test_unknown_memory_format_is_refused():
    with pytest.raises(ValueError, match="memory_format must be one of"):
        Execution(memory_format="nhwc")


def _rows(x):
    return {bytes(r.numpy().tobytes()) for r in x}


def test_validation_protocols_hold_out_what_they_say():
    base = RunConfig(dataset="optdigits-lt", **{**SMALL, "limit_train": 0, "batch_size": 16})
    held = experiment.prepare(dataclasses.replace(base, validation="heldout"))
    assert splits.class_counts(held.val[1], 10) == [40] * 10  # balanced, k per class
    assert not _rows(held.val[0]) & _rows(held.train[0]) and not _rows(held.val[0]) & _rows(held.test[0])
    folds = [experiment.prepare(dataclasses.replace(base, validation="kfold", folds=3, fold=i)) for i in range(3)]
    vals = [_rows(p.val[0]) for p in folds]
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2]) and not (vals[0] & vals[2])
    assert all(not _rows(p.val[0]) & _rows(p.train[0]) for p in folds)
    assert sum(len(p.val[1]) for p in folds) == len(held.train[1])  # the folds partition the training split
    with pytest.raises(runs.RunError, match="no held-out validation"):
        experiment.prepare(RunConfig(validation="heldout", **SMALL))
    with pytest.raises(ValueError, match="kfold"):
        RunConfig(validation="kfold", fold=5, folds=5)


@pytest.fixture(scope="module")
def optdigits_source(tmp_path_factory):
    """A small CNN trained on balanced optdigits: the source the fine-tuning tests start from (trained once)."""
    src = tmp_path_factory.mktemp("source") / "src"
    experiment.run(
        RunConfig(dataset="optdigits", **{**SMALL, "limit_train": 0, "batch_size": 32}), src, execution=EAGER
    )
    return src


def test_levers_reach_the_run_and_its_record(tmp_path, optdigits_source):
    src = optdigits_source
    cfg = RunConfig(
        dataset="optdigits-lt:ratio=20",
        validation="heldout",
        sampling="class_balanced",
        mix=MixConfig(mixup=0.4),
        loss=LossConfig("logit_adjust", defer=0.5),
        classifier=ClassifierConfig(crt_epochs=1, tau_norm=0.5, posthoc_tau=1.0),
        finetune=FinetuneConfig(str(src), "all", l2sp=1e-3, wise=True),
        **{**SMALL, "model_config": None, "limit_train": 0, "batch_size": 16, "epochs": 2},
    )
    r = experiment.run(cfg, tmp_path / "ft", execution=EAGER)
    post = r["post_training"]
    assert set(post) == {"wise_alpha", "wise_val_macro_f1", "wise_crossfit", "crt_epochs", "tau_norm", "posthoc_tau"}
    assert len(post["wise_val_macro_f1"]) == 11 and post["wise_val_macro_f1"][f"{post['wise_alpha']:g}"] == max(
        post["wise_val_macro_f1"].values()
    )
    # the run's validation figure is the cross-fitted one (each half scored by the alpha the other half chose)
    assert r["val"]["macro_f1"] == post["wise_crossfit"]["macro_f1"] and r["val"]["count"] == 400
    assert all(a in finetune.WISE_ALPHAS for a in post["wise_crossfit"]["alphas"])
    assert r["train_class_counts"][0] > 5 * r["train_class_counts"][-1]
    assert experiment.read_config(tmp_path / "ft") == cfg  # every lever round-trips through config.json
    zs = experiment.evaluate_run(src, "optdigits-lt", split="val")
    assert zs["count"] == 400


def test_wise_validation_is_cross_fitted_not_the_best_of_eleven(optdigits_source):
    """The value a study reads for a WiSE-FT run is scored on images that took no part in choosing alpha: each
    half of the validation split is predicted by the interpolation the other half chose (checked against the
    same computation written out by hand)."""
    src = optdigits_source
    cfg = RunConfig(
        dataset="optdigits-lt:ratio=20",
        validation="heldout",
        finetune=FinetuneConfig(str(src), "all", wise=True),
        **{**SMALL, "model_config": None, "limit_train": 0, "batch_size": 16, "epochs": 1},
    )
    p = experiment.prepare(cfg)
    k = random.key(5)
    tuned = tree.map(lambda x: x + 0.05 * random.normal(random.fold_in(k, x.numel()), x.shape), p.params)
    state = train.TrainState(tuned, p.model_state, None, k, torch.zeros((), dtype=torch.int64))
    final, record, honest = experiment.training._wise(p, state, lambda q: (q, {}))
    x, y = p.val
    halves = splits.stratified_split(random.fold_in(random.key(splits.SPLIT_SEED), 7), y, 0.5)
    ev = lambda q, i: experiment.evaluate(p.model, q, p.model_state, x[i], y[i], 10, mean=p.mean, std=p.std)
    alphas = [
        finetune.wise_select(p.source_params, tuned, p.anchored, lambda q, i=i: ev(q, i)["macro_f1"])[0] for i in halves
    ]
    at = lambda a: finetune.interpolate(p.source_params, tuned, a, p.anchored)
    confusion = torch.tensor(ev(at(alphas[1]), halves[0])["confusion"]) + torch.tensor(
        ev(at(alphas[0]), halves[1])["confusion"]
    )
    assert record["wise_crossfit"]["alphas"] == alphas
    assert honest["macro_f1"] == pytest.approx(metrics.summarize(confusion)["macro_f1"], abs=1e-12)
    assert honest["count"] == 400
    best = max(record["wise_val_macro_f1"].values())
    assert record["wise_val_macro_f1"][f"{record['wise_alpha']:g}"] == best  # the saved model: the full split's pick
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(final), tree.leaves(at(record["wise_alpha"]))))


def test_trials_never_read_the_test_split(tmp_path, monkeypatch):
    """``test_split=False`` (every study trial and re-run): no test figure in metrics.json, no evaluation of the
    test images."""
    seen = []
    real = experiment.evaluate
    monkeypatch.setattr(experiment.training, "evaluate", lambda *a, **kw: seen.append(len(a[4])) or real(*a, **kw))
    r = experiment.run(RunConfig(**SMALL), tmp_path / "a", execution=EAGER, test_split=False)
    assert r["test"] is None and seen == [r["val"]["count"]]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["test"] is None
    assert not (tmp_path / "a" / "confusion.png").exists()


def test_no_second_validation_unless_post_training_changed_the_params(tmp_path, monkeypatch):
    """The last epoch's validation measured the final parameters: the run reports it instead of measuring again,
    unless post-training (here tau-normalisation) changed them after that epoch."""
    seen = []
    real = experiment.evaluate
    monkeypatch.setattr(experiment.training, "evaluate", lambda *a, **kw: seen.append(len(a[4])) or real(*a, **kw))
    r = experiment.run(RunConfig(**SMALL), tmp_path / "a", execution=EAGER, write_figures=False)
    n_val, n_test = r["val"]["count"], r["test"]["count"]
    assert n_val != n_test and seen == [n_val, n_test]  # the epoch's validation, then the test split once
    assert r["val"]["accuracy"] == r["epochs"][-1]["val_accuracy"] and "per_class" in r["val"]
    seen.clear()
    r = experiment.run(
        RunConfig(classifier=ClassifierConfig(tau_norm=1.0), **SMALL),
        tmp_path / "b",
        execution=EAGER,
        write_figures=False,
    )
    assert seen == [n_val, n_val, n_test] and r["post_training"] == {"tau_norm": 1.0}


def test_network_false_reaches_the_data_source(tmp_path):
    """``DataSettings(network=False)`` (the CLI's ``$HWR_OFFLINE``) travels from ``run`` and ``evaluate_run`` to the
    source: a set that is not present and has no registry fallback is refused without an internet attempt."""
    from hwr.config import DataSettings
    from hwr.errors import HwrError

    offline = DataSettings(tmp_path / "data", network=False)
    config = RunConfig(**{**SMALL, "dataset": "kmnist"})
    with pytest.raises(HwrError, match="network downloads disabled"):
        experiment.run(config, tmp_path / "run", execution=EAGER, data=offline)
    source = tmp_path / "optdigits"  # a trained run (optdigits comes from scikit-learn, no download)
    experiment.run(RunConfig(**{**SMALL, "dataset": "optdigits"}), source, execution=EAGER, write_figures=False)
    with pytest.raises(HwrError, match="network downloads disabled"):
        experiment.evaluate_run(source, "kmnist", data=offline)


def test_validating_only_the_last_epoch_trains_the_same_model(tmp_path):
    """``validate_every``: the figures are skipped between, never the training; the last epoch always validates."""
    cfg = RunConfig(**{**SMALL, "epochs": 3, "limit_train": 256})
    every = experiment.run(cfg, tmp_path / "every", execution=EAGER, write_figures=False)
    last = experiment.run(cfg, tmp_path / "last", execution=EAGER, write_figures=False, validate_every=3)
    assert ["val_macro_f1" in e for e in last["epochs"]] == [False, False, True]
    assert all("val_macro_f1" in e for e in every["epochs"])
    assert last["val"] == every["val"] and last["test"] == every["test"]
    a, b = (checkpoint.load_flat(tmp_path / d / runs.CHECKPOINT)[0] for d in ("every", "last"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="validate_every must be >= 1"):
        experiment.run(cfg, tmp_path / "bad", execution=EAGER, validate_every=0)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
