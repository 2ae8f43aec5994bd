"""A self-training trial is judged on its teacher: the pruner reads the teacher's epochs (the trial's recipe
without self-training) at the same rungs as any trial's, so a poor recipe is pruned before its student trains, and
the student's epochs are not reported a second time."""

import json
import warnings

import optuna
import pytest
from tiny import EAGER, TINY_CNN

from hwr.config import DataSettings
from hwr.optim import OptimConfig
from hwr.runs import CHECKPOINT
from hwr.tasks.digits import selftrain
from hwr.tasks.digits.config import RunConfig, SelfTrainConfig
from hwr.tune.study import _Pruning, train_fresh

CONFIG = RunConfig(
    model_config=TINY_CNN,
    dataset="optdigits-lt",
    validation="heldout",
    epochs=2,
    batch_size=16,
    optim=OptimConfig("adam", 3e-3, "constant"),
    self_train=SelfTrainConfig(0.5),
)


def _trial(pruner: optuna.pruners.BasePruner) -> optuna.Trial:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner).ask()


def test_a_poor_recipe_is_pruned_on_its_teacher_before_the_student_trains(tmp_path):
    trial = _trial(optuna.pruners.ThresholdPruner(lower=1.5))  # every figure is under 1.5: prune at once
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        train_fresh(CONFIG, tmp_path / "t", EAGER, DataSettings(tmp_path / "data"), [_Pruning(trial, "val_macro_f1")])
    assert (tmp_path / "t" / selftrain.TEACHER / "config.json").is_file()  # the teacher started and was judged
    assert not (tmp_path / "t" / selftrain.TEACHER / "metrics.json").exists()  # ...and stopped after epoch 1
    assert not (tmp_path / "t" / CHECKPOINT).exists()  # the student never started
    assert list(trial.study.trials[0].intermediate_values) == [0]


def test_a_trial_that_survives_reports_each_epoch_once(tmp_path):
    trial = _trial(optuna.pruners.NopPruner())
    watch = _Pruning(trial, "val_macro_f1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # optuna warns when a step is reported twice
        result = train_fresh(CONFIG, tmp_path / "t", EAGER, DataSettings(tmp_path / "data"), [watch])
    teacher = json.loads((tmp_path / "t" / selftrain.TEACHER / "metrics.json").read_text())
    values = trial.study.trials[0].intermediate_values
    assert sorted(values) == [0, 1] and watch.reported == {0, 1}
    assert values[1] == teacher["val"]["macro_f1"]  # the teacher's last epoch, not the student's
    assert result["self_training"]["kept"] > 0  # the student trained, its epochs unreported
