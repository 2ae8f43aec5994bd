"""Run configuration as frozen dataclasses, and their exact round trip through JSON.

A ``RunConfig`` is everything needed to rerun a training run (``config.json`` in every run folder). Studies
turn a trial into a ``RunConfig``; nothing threads raw dicts through the code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from hwr import models
from hwr.data.augment import AugmentConfig
from hwr.losses import LossConfig

__all__ = ["MEMORY_FORMATS", "FinetuneConfig", "OptimConfig", "RunConfig", "from_dict", "to_dict"]


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule. ``schedule``: constant | cosine | onecycle | step (x0.1 every third of training).
    ``lr`` is the peak rate for ``onecycle``/``cosine``."""

    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    schedule: str = "constant"
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    warmup: float = 0.25
    clip_norm: float = 0.0  # 0: no clipping

    def __post_init__(self) -> None:
        if self.name not in ("adam", "adamw", "sgd"):
            raise ValueError(f"unknown optimizer {self.name!r}; choose adam, adamw or sgd")
        if self.schedule not in ("constant", "cosine", "onecycle", "step"):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose constant, cosine, onecycle or step")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Start from a trained run. ``trainable``: head (classifier only) | last (last block, hidden layer and
    head) | all; ``backbone_lr_mult`` scales the learning rate of trainable parameters outside the head."""

    source: str = ""  # run folder with config.json + checkpoint.safetensors
    trainable: str = "all"
    backbone_lr_mult: float = 1.0

    def __post_init__(self) -> None:
        if self.trainable not in ("head", "last", "all"):
            raise ValueError(f"trainable must be head, last or all, got {self.trainable!r}")
        if self.backbone_lr_mult < 0:
            raise ValueError(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult}")


MEMORY_FORMATS = ("contiguous", "channels_last")


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
    val_fraction: float = 0.1
    limit_train: int = 0
    limit_test: int = 0
    compile: bool = True
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    memory_format: str = "contiguous"  # contiguous | channels_last (hwr.perf.channels_last; same function)
    recipe: str = ""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {self.memory_format!r}")
        if self.model_config is not None and not dataclasses.is_dataclass(self.model_config):
            object.__setattr__(self, "model_config", models.config_from_dict(self.model, self.model_config))


def to_dict(obj: Any) -> Any:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild ``cls`` from ``to_dict`` output, recursing into nested dataclasses; unknown keys are an error."""
    if not isinstance(values, dict):
        raise TypeError(f"{cls.__name__} expects a JSON object, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value)
    if cls is RunConfig and kwargs.get("model_config") is not None:
        kwargs["model_config"] = models.config_from_dict(kwargs.get("model", "cnn"), kwargs["model_config"])
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    options = typing.get_args(hint) if is_union else (hint,)
    for opt in options:
        if dataclasses.is_dataclass(opt) and isinstance(value, dict):
            return from_dict(opt, value)
        if typing.get_origin(opt) is tuple and isinstance(value, list):
            return tuple(value)
    return value
