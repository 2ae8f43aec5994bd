"""The digit task's config: ``RunConfig`` (everything needed to rerun a classifier run: ``config.json`` in its run
folder), with the fine-tuning and classifier stages it may name. Studies turn a trial into a ``RunConfig``;
nothing threads raw dicts through the code. Where and how a run executes is not part of it
(``hwr.engine.execution.Execution``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hwr import models
from hwr.data.augment import AugmentConfig
from hwr.data.batches import SAMPLING_POWERS
from hwr.data.mix import MixConfig
from hwr.errors import InputError
from hwr.losses import LossConfig
from hwr.optim import OptimConfig

__all__ = ["VALIDATIONS", "ClassifierConfig", "FinetuneConfig", "RunConfig", "SelfTrainConfig"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Start from a trained run. ``trainable``: head (classifier only) | last (last block, hidden layer and
    head) | all; ``backbone_lr_mult`` scales the learning rate of trainable parameters outside the head."""

    source: str = ""  # run folder with config.json + checkpoint.safetensors
    trainable: str = "all"
    backbone_lr_mult: float = 1.0
    reinit: tuple[str, ...] = ()  # top-level groups initialised afresh although the source's would fit (head, fc)
    l2sp: float = 0.0  # L2-SP strength toward the source weights (0: off)
    wise: bool = False  # WiSE-FT: interpolate source and fine-tuned weights, alpha chosen on validation

    def __post_init__(self) -> None:
        if self.trainable not in ("head", "last", "all"):
            raise InputError(f"trainable must be head, last or all, got {self.trainable!r}")
        if self.backbone_lr_mult < 0:
            raise InputError(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult}")
        if self.l2sp < 0:
            raise InputError(f"l2sp must be >= 0, got {self.l2sp}")
        object.__setattr__(self, "reinit", tuple(self.reinit))


@dataclass(frozen=True)
class ClassifierConfig:
    """What happens to the classifier after training, in this order: ``crt_epochs`` of classifier re-training
    (cRT: the head re-initialised and trained alone on frozen features with class-balanced sampling, Adam
    ``crt_lr``); tau-normalisation of the head rows (``tau_norm``, 0: off); post-hoc logit adjustment
    ``logits - posthoc_tau * log(train prior)`` folded into the head bias (0: off)."""

    crt_epochs: int = 0
    crt_lr: float = 1e-3
    tau_norm: float = 0.0
    posthoc_tau: float = 0.0

    def __post_init__(self) -> None:
        if self.crt_epochs < 0 or self.tau_norm < 0 or self.posthoc_tau < 0 or not self.crt_lr > 0:
            raise InputError(f"classifier settings must be >= 0 (crt_lr > 0), got {self}")

    def is_identity(self) -> bool:
        return self.crt_epochs == 0 and self.tau_norm == 0 and self.posthoc_tau == 0


@dataclass(frozen=True)
class SelfTrainConfig:
    """Self-training on the data set's unlabelled images (``hwr.tasks.digits.selftrain``): a teacher is trained
    by the same config without it, every unlabelled image it reads with confidence >= ``threshold`` joins the
    training split under the class it read, and the run trains again from the same start on both. ``threshold``
    0: off."""

    threshold: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise InputError(f"self-training threshold must be in [0, 1) (0: off), got {self.threshold}")

    @property
    def on(self) -> bool:
        return self.threshold > 0.0


VALIDATIONS = ("split", "heldout", "kfold")


@dataclass(frozen=True)
class RunConfig:
    """One training run. ``model_config`` is the family's config (None: its defaults); ``limit_*`` subsample
    the data (0: all) for smoke tests; ``val_fraction`` of the training set is held out, stratified."""

    model: str = "cnn"
    model_config: Any = None
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 128
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    finetune: FinetuneConfig | None = None
    seed: int = 0
    validation: str = "split"  # split (val_fraction, stratified) | heldout (the dataset's own) | kfold (fold of folds)
    val_fraction: float = 0.1
    folds: int = 5
    fold: int = 0
    sampling: str = "instance"  # instance | sqrt | class_balanced (hwr.data.batches.sampled_batches)
    mix: MixConfig = field(default_factory=MixConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    self_train: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    limit_train: int = 0
    limit_test: int = 0
    recipe: str = ""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0.0 < self.val_fraction < 0.5:
            raise InputError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.validation not in VALIDATIONS:
            raise InputError(f"validation must be one of {VALIDATIONS}, got {self.validation!r}")
        if self.validation == "kfold" and not (self.folds >= 2 and 0 <= self.fold < self.folds):
            raise InputError(f"kfold validation needs folds >= 2 and 0 <= fold < folds, got {self.fold}/{self.folds}")
        if self.sampling not in SAMPLING_POWERS:
            raise InputError(f"sampling must be one of {tuple(SAMPLING_POWERS)}, got {self.sampling!r}")
        if self.model_config is not None and not dataclasses.is_dataclass(self.model_config):
            object.__setattr__(self, "model_config", models.config_from_dict(self.model, self.model_config))
