"""Only the final evaluation reads the test split: with the test labels poisoned, every trial's value, every
re-run's value and the selected trial are unchanged, and no trial's metrics.json holds a test figure."""

import dataclasses
import json

import optuna
from tiny import TINY_STUDY

from hwr import tune
from hwr.data import sources
from hwr.tune import evaluation

SPEC = dataclasses.replace(tune.load_spec(str(TINY_STUDY)), n_trials=3, rerun_top=2, rerun_seeds=(5,))


def _study(root, tag):
    s = tune.optimize(SPEC, storage_url=f"sqlite:///{root / 'db.sqlite'}", name=tag, root=root)
    winner, rows = evaluation.select(SPEC, s, root / "sel")
    values = [t.value for t in s.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    return values, winner.number, rows


def test_poisoned_test_labels_change_no_trial_and_no_selection(tmp_path, monkeypatch):
    clean = _study(tmp_path / "clean", "tiny")
    trial_metrics = [json.loads(p.read_text()) for p in (tmp_path / "clean").glob("studies/tiny/trial_*/metrics.json")]
    assert trial_metrics and all(m["test"] is None for m in trial_metrics)
    real = sources.load

    def poisoned(*args, **kwargs):
        ds = real(*args, **kwargs)
        return ds._replace(test_labels=(ds.test_labels + 3) % ds.num_classes)  # every test label wrong

    monkeypatch.setattr(sources, "load", poisoned)
    assert tune.load_spec(str(TINY_STUDY)).name == "tiny"
    dirty = _study(tmp_path / "dirty", "tiny")
    assert dirty == clean  # the same trial values, the same winner, the same re-run values
    reruns = [json.loads(p.read_text()) for p in (tmp_path / "dirty" / "sel").glob("*/metrics.json")]
    assert len(reruns) == 2 and all(m["test"] is None for m in reruns)
