"""Architecture search from scratch on MNIST, two objectives: validation accuracy (maximise) and parameter
count (minimise). The Pareto front is the answer: the smallest network for each accuracy.

Search: the model family (CNN, RNN reading rows or conv-stem columns, ViT), then the family's own space:
CNN blocks, channels, convs per block, kernel size, hidden width, dropout and normalisation; RNN cell, width,
layers, direction and reader; ViT patch size, width, depth, heads and pooling. Trials train 2 epochs on a fixed
12,000-image subset of the training split (eagerly, ``execution=Execution(compile=False)``: each architecture
would otherwise pay its own compile), and select on the stratified validation split; the test split is untouched.
"""

from __future__ import annotations

from typing import Any

import optuna

from hwr.engine.execution import Execution
from hwr.models.cnn import CNNConfig
from hwr.models.rnn import RNNConfig
from hwr.models.vit import ViTConfig
from hwr.optim import OptimConfig
from hwr.tasks.digits.config import RunConfig
from hwr.tune import StudyContext, StudySpec


def _cnn(trial: optuna.Trial) -> CNNConfig:
    blocks = trial.suggest_int("cnn_blocks", 1, 3)
    base = trial.suggest_categorical("cnn_base_channels", [8, 16, 32, 64])
    return CNNConfig(
        channels=tuple(min(base * 2**i, 256) for i in range(blocks)),
        convs_per_block=trial.suggest_int("cnn_convs_per_block", 1, 2),
        kernel_size=trial.suggest_categorical("cnn_kernel_size", [3, 5]),
        hidden=trial.suggest_categorical("cnn_hidden", [0, 64, 128, 256]),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        norm=trial.suggest_categorical("cnn_norm", ["none", "batch"]),
    )


def _rnn(trial: optuna.Trial) -> RNNConfig:
    return RNNConfig(
        cell=trial.suggest_categorical("rnn_cell", ["gru", "lstm"]),
        hidden=trial.suggest_categorical("rnn_hidden", [32, 64, 128]),
        num_layers=trial.suggest_int("rnn_layers", 1, 2),
        bidirectional=trial.suggest_categorical("rnn_bidirectional", [False, True]),
        reader=trial.suggest_categorical("rnn_reader", ["rows", "conv"]),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
    )


def _vit(trial: optuna.Trial) -> ViTConfig:
    dim = trial.suggest_categorical("vit_dim", [32, 64, 96])
    return ViTConfig(
        patch_size=trial.suggest_categorical("vit_patch_size", [4, 7]),
        dim=dim,
        depth=trial.suggest_int("vit_depth", 1, 4),
        heads=trial.suggest_categorical("vit_heads", [2, 4]),
        mlp_dim=2 * dim,
        pool=trial.suggest_categorical("vit_pool", ["cls", "mean"]),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
    )


FAMILIES: dict[str, Any] = {"cnn": _cnn, "rnn": _rnn, "vit": _vit}


def suggest(trial: optuna.Trial, ctx: StudyContext) -> RunConfig:
    family = trial.suggest_categorical("family", list(FAMILIES))
    return RunConfig(
        model=family,
        model_config=FAMILIES[family](trial),
        dataset="mnist",
        epochs=2,
        limit_train=12_000,
        optim=OptimConfig("adam", trial.suggest_float("lr", 5e-4, 5e-3, log=True), "onecycle", warmup=0.2),
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
    execution=Execution(compile=False),
)
