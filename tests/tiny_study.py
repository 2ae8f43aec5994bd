"""A seconds-long study for the tests: a small CNN from scratch on optdigits, eager steps (``StudySpec.execution``'s
default).

``HWR_TINY_EPOCHS`` lengthens trials (the kill -9 test needs one still running); ``HWR_TINY_NAN_TRIAL`` makes
that trial number diverge (learning rate 1e30) to exercise the NaN path.
"""

import os

import optuna

from hwr.models.cnn import CNNConfig
from hwr.optim import OptimConfig
from hwr.tasks.digits.config import RunConfig
from hwr.tune import StudyContext, StudySpec


def suggest(trial: optuna.Trial, ctx: StudyContext) -> RunConfig:
    nan = trial.number == int(os.environ.get("HWR_TINY_NAN_TRIAL", "-1"))
    return RunConfig(
        model_config=CNNConfig(channels=(4, 8), hidden=trial.suggest_categorical("hidden", [16, 32])),
        dataset="optdigits",
        epochs=int(os.environ.get("HWR_TINY_EPOCHS", "2")),
        batch_size=32,
        limit_train=256,
        limit_test=200,
        val_fraction=0.2,
        optim=OptimConfig("adam", 1e30 if nan else trial.suggest_float("lr", 1e-3, 1e-2, log=True)),
    )


def baselines(ctx: StudyContext) -> dict[str, RunConfig]:
    return {
        "plain_finetune": RunConfig(
            model_config=CNNConfig(channels=(4, 8), hidden=16),
            dataset="optdigits",
            epochs=1,
            batch_size=32,
            limit_train=256,
            limit_test=200,
        )
    }


SPEC = StudySpec(
    name="tiny",
    description="tiny",
    suggest=suggest,
    metrics=("val_macro_f1",),
    directions=("maximize",),
    n_trials=3,
    sampler=lambda seed: optuna.samplers.RandomSampler(seed=seed),
    pruner=lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
    baselines=baselines,
    eval_seeds=(1, 2),
    reference="plain_finetune",
)
