"""The strings task's config: ``StringsConfig``, everything needed to rerun a strings run (``config.json`` with
``"task": "strings"``). Where and how it executes is not part of it (``hwr.engine.execution.Execution``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hwr import models
from hwr.data import strings as ds
from hwr.errors import InputError
from hwr.models.crnn import CRNNConfig
from hwr.optim import OptimConfig

__all__ = ["TASK", "StringsConfig"]

TASK = "strings"


@dataclass(frozen=True)
class StringsConfig:
    """One strings training run. ``steps`` batches of fresh strings make an epoch; ``source`` is a trained
    digit run folder whose matching parameters (the conv stem, by name and shape) initialise the model."""

    model: str = "crnn"
    model_config: Any = None  # CRNNConfig; None: its defaults
    data: ds.StringSpec = field(default_factory=ds.StringSpec)
    dataset: str = "mnist"
    epochs: int = 10
    steps: int = 400
    batch_size: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", 3e-3, "onecycle", warmup=0.15))
    val_strings: int = 2000
    test_strings: int = 8000
    seed: int = 0
    source: str = ""
    recipe: str = ""
    task: str = TASK

    def __post_init__(self) -> None:
        if self.task != TASK:
            raise InputError(f"a StringsConfig has task {TASK!r}, got {self.task!r}")
        if self.model != "crnn":
            raise InputError(
                f"strings are read by the crnn family (per-column CTC scores), not {self.model!r}; use --model crnn"
            )
        if isinstance(self.model_config, dict):
            object.__setattr__(self, "model_config", models.config_from_dict(self.model, self.model_config))
        if self.model_config is not None and not isinstance(self.model_config, CRNNConfig):
            raise InputError(f"model_config must be a CRNNConfig, got {type(self.model_config).__name__}")
        if self.dataset not in ("mnist", "emnist-digits", "qmnist"):
            raise InputError(
                f"strings are composed from a digit data set (mnist, emnist-digits, qmnist), got {self.dataset!r}"
            )
        for name in ("epochs", "steps", "batch_size", "val_strings", "test_strings"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def crnn(self) -> CRNNConfig:
        """The model config, with the strings' height and a class per character of their alphabet (the digits,
        then the separators: ``hwr.data.strings.StringSpec.alphabet``)."""
        base = self.model_config or CRNNConfig()
        fit = {"height": self.data.height, "num_classes": len(self.data.alphabet)}
        changes = {k: v for k, v in fit.items() if getattr(base, k) != v}
        return dataclasses.replace(base, **changes) if changes else base
