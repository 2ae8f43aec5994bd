"""Architecture search from scratch on MNIST, two objectives: validation accuracy (maximise) and parameter
count (minimise). The Pareto front is the answer: the smallest network for each accuracy.

Search: blocks, channels, convs per block, kernel size, hidden width, dropout and normalisation of the CNN.
Trials train 2 epochs on a fixed 12,000-image subset of the training split (eagerly: each architecture would
otherwise pay its own compile), and select on the stratified validation split; the test split is untouched.
"""

from __future__ import annotations

import optuna

from hwr.config import OptimConfig, RunConfig
from hwr.models.cnn import CNNConfig
from hwr.study import StudyContext, StudySpec


def suggest(trial: optuna.Trial, ctx: StudyContext) -> RunConfig:
    blocks = trial.suggest_int("blocks", 1, 3)
    base = trial.suggest_categorical("base_channels", [8, 16, 32, 64])
    model = CNNConfig(
        channels=tuple(min(base * 2**i, 256) for i in range(blocks)),
        convs_per_block=trial.suggest_int("convs_per_block", 1, 2),
        kernel_size=trial.suggest_categorical("kernel_size", [3, 5]),
        hidden=trial.suggest_categorical("hidden", [0, 64, 128, 256]),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        norm=trial.suggest_categorical("norm", ["none", "batch"]),
    )
    return RunConfig(
        model="cnn",
        model_config=model,
        dataset="mnist",
        epochs=2,
        limit_train=12_000,
        optim=OptimConfig("adam", trial.suggest_float("lr", 5e-4, 5e-3, log=True), "onecycle", warmup=0.2),
        compile=False,
        recipe="architecture",
    )


SPEC = StudySpec(
    name="mnist_architecture",
    description=__doc__.splitlines()[0],
    suggest=suggest,
    metrics=("val_accuracy", "num_params"),
    directions=("maximize", "minimize"),
    n_trials=12,
    sampler=lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=6),
)
