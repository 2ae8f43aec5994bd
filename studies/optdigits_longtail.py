"""The default study: fine-tune an MNIST-pretrained CNN to long-tailed optdigits (UCI handwritten digits,
other writers, 8x8 scans brought into MNIST's space) and select on validation macro-F1.

Data: source = the ``fast`` recipe on MNIST (trained once and cached under runs/pretrained); target =
``optdigits-lt`` (training part long-tailed with imbalance ratio 100: the head class keeps all its images, the
tail 1/100), a stratified validation split of it for selection, and the balanced optdigits test split, which
the search never touches (only ``hwr study best --evaluate`` reads it).

Search: architecture (which blocks train, head width, dropout, backbone learning-rate multiplier), class
weighting (none, inverse frequency ** p, effective number with beta, logit adjustment with tau), augmentation
(rotation, translation, scale, shear, elastic, erasing) and the optimizer (learning rate, weight decay, epochs).

Trials run the pure step eagerly: on a few hundred images a trial trains in seconds, while each new head width
or trainable set would cost a fresh 10-40 s compile on this CPU.
"""

from __future__ import annotations

import optuna

from hwr import recipes
from hwr.config import FinetuneConfig, OptimConfig, RunConfig
from hwr.data.augment import AugmentConfig
from hwr.losses import LossConfig
from hwr.models.cnn import CNNConfig
from hwr.study import StudyContext, StudySpec

TARGET = "optdigits-lt"
BATCH = 32
VAL_FRACTION = 0.25


def _finetune(ctx: StudyContext, **kw) -> RunConfig:
    return RunConfig(
        dataset=TARGET, batch_size=BATCH, val_fraction=VAL_FRACTION, compile=False, recipe="finetune", **kw
    )


def suggest(trial: optuna.Trial, ctx: StudyContext) -> RunConfig:
    """A trial's point in the search space as the frozen configs the library uses."""
    trainable = trial.suggest_categorical("trainable", ["head", "last", "all"])
    model = CNNConfig(
        hidden=trial.suggest_categorical("hidden", [64, 128, 256]),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
    )
    mult = trial.suggest_float("backbone_lr_mult", 0.01, 1.0, log=True) if trainable != "head" else 1.0
    weighting = trial.suggest_categorical("weighting", ["none", "inverse", "effective", "logit_adjust"])
    loss = LossConfig(
        weighting=weighting,
        power=trial.suggest_float("power", 0.25, 1.0) if weighting == "inverse" else 1.0,
        beta=trial.suggest_categorical("beta", [0.9, 0.99, 0.999]) if weighting == "effective" else 0.999,
        tau=trial.suggest_float("tau", 0.5, 2.0) if weighting == "logit_adjust" else 1.0,
    )
    augment = AugmentConfig(
        rotation=trial.suggest_float("rotation", 0.0, 20.0),
        translate=trial.suggest_float("translate", 0.0, 3.0),
        scale=trial.suggest_float("scale", 0.0, 0.2),
        shear=trial.suggest_float("shear", 0.0, 15.0),
        elastic_alpha=trial.suggest_float("elastic_alpha", 0.0, 10.0),
        elastic_sigma=trial.suggest_float("elastic_sigma", 3.0, 6.0),
        erase_prob=trial.suggest_float("erase_prob", 0.0, 0.5),
    )
    optim = OptimConfig(
        "adamw",
        lr=trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        schedule="cosine",
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    )
    return _finetune(
        ctx,
        model_config=model,
        epochs=trial.suggest_int("epochs", 10, 30, step=5),
        optim=optim,
        augment=augment,
        loss=loss,
        finetune=FinetuneConfig(str(ctx.source_dir), trainable, mult),
    )


def baselines(ctx: StudyContext) -> dict[str, RunConfig]:
    """The untuned references: the plain fine-tune (all layers, no class weights, no augmentation) and the same
    CNN trained from scratch on the target."""
    optim = OptimConfig("adamw", 1e-3, "cosine", weight_decay=1e-4)
    return {
        "plain_finetune": _finetune(ctx, epochs=20, optim=optim, finetune=FinetuneConfig(str(ctx.source_dir), "all")),
        "scratch": _finetune(ctx, model="cnn", epochs=30, optim=optim),
    }


SPEC = StudySpec(
    name="optdigits_longtail",
    description=__doc__.splitlines()[0],
    suggest=suggest,
    metrics=("val_macro_f1",),
    directions=("maximize",),
    n_trials=30,
    sampler=lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True),
    pruner=lambda: optuna.pruners.MedianPruner(n_startup_trials=6, n_warmup_steps=5),
    source=recipes.get("fast"),
    baselines=baselines,
)
