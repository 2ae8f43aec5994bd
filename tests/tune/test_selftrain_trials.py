"""A self-training trial reports one learning curve: its teacher's epochs (the trial's recipe without
self-training) at the same steps as any trial's, then its student's after them, so a poor recipe is pruned before
its student trains and a student can be pruned at the rungs past the teacher."""

import json
import warnings

import optuna
import pytest
from tiny import EAGER, self_training_config

from hwr.config import DataSettings
from hwr.runs import CHECKPOINT
from hwr.tasks.digits import selftrain
from hwr.tune.study import _Pruning, train_fresh

CONFIG = self_training_config()


def _trial(pruner: optuna.pruners.BasePruner) -> optuna.Trial:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner).ask()


def test_a_poor_recipe_is_pruned_on_its_teacher_before_the_student_trains(tmp_path):
    trial = _trial(optuna.pruners.ThresholdPruner(lower=1.5))  # every figure is under 1.5: prune at once
    with pytest.raises(optuna.TrialPruned, match="step 1 "):
        train_fresh(CONFIG, tmp_path / "t", EAGER, DataSettings(tmp_path / "data"), [_Pruning(trial, "val_macro_f1")])
    assert (tmp_path / "t" / selftrain.TEACHER / "config.json").is_file()  # the teacher started and was judged
    assert not (tmp_path / "t" / selftrain.TEACHER / "metrics.json").exists()  # ...and stopped after epoch 1
    assert not (tmp_path / "t" / CHECKPOINT).exists()  # the student never started
    assert list(trial.study.trials[0].intermediate_values) == [0]


def test_a_trial_that_survives_reports_its_teacher_then_its_student(tmp_path):
    trial = _trial(optuna.pruners.NopPruner())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # optuna warns when a step is reported twice
        result = train_fresh(
            CONFIG, tmp_path / "t", EAGER, DataSettings(tmp_path / "data"), [_Pruning(trial, "val_macro_f1")]
        )
    teacher = json.loads((tmp_path / "t" / selftrain.TEACHER / "metrics.json").read_text())
    values = trial.study.trials[0].intermediate_values
    assert sorted(values) == [0, 1, 2, 3]  # teacher's epochs 1-2, then the student's
    assert values[1] == teacher["val"]["macro_f1"] and values[3] == result["val"]["macro_f1"]


def test_a_student_validates_where_its_steps_meet_the_rungs(tmp_path):
    """With a predicate, the student validates at its epochs whose step past the teacher's is due."""
    trial = _trial(optuna.pruners.NopPruner())
    due = lambda epoch: epoch in (1, 4)
    train_fresh(
        CONFIG,
        tmp_path / "t",
        EAGER,
        DataSettings(tmp_path / "data"),
        [_Pruning(trial, "val_macro_f1")],
        validate_at=due,
    )
    # steps 0 (due) and 1 (the teacher's last epoch always validates), then 3 (the student's second: due, and last)
    assert sorted(trial.study.trials[0].intermediate_values) == [0, 1, 3]
