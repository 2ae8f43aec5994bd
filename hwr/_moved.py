"""Every import path the house move (0.2) retired, in one place, kept for one release: importing an old path
warns (``DeprecationWarning``, naming the new home) and gives a module whose names resolve in their new homes.
Remove this file, and its one line in ``hwr/__init__.py``, in the release after 0.2.

Renamed besides the paths: ``hwr.study.storage`` is ``hwr.tune.open_storage``; ``hwr.experiment.build_optimizer``
is ``hwr.optim.from_config``; ``hwr.finetune.transfer`` is ``hwr.runs.transfer``; the strings step's own
``memory_format`` rule is gone (autotune chooses, as for digits).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

# old module -> the new modules its names live in, in lookup order
MOVED: dict[str, tuple[str, ...]] = {
    "hwr.train": ("hwr.engine.train",),
    "hwr.execution": ("hwr.engine.execution", "hwr.runs"),
    "hwr.autotune": ("hwr.engine.autotune",),
    "hwr.perf": ("hwr.engine.perf",),
    "hwr.runtime": ("hwr.engine.runtime", "hwr.config"),
    "hwr.experiment": ("hwr.tasks.digits", "hwr.runs", "hwr.data.splits"),
    "hwr.preparation": ("hwr.tasks.digits.preparation", "hwr.runs", "hwr.data.splits"),
    "hwr.finetune": ("hwr.tasks.digits.finetune", "hwr.runs"),
    "hwr.longtail": ("hwr.tasks.digits.finetune",),
    "hwr.strings_run": ("hwr.tasks.strings", "hwr.runs"),
    "hwr.strings_step": ("hwr.tasks.strings.step",),
    "hwr.strings_read": ("hwr.tasks.strings.read",),
    "hwr.segment": ("hwr.tasks.strings.segment",),
    "hwr.study": ("hwr.tune", "hwr.tune.study"),
    "hwr.storage": ("hwr.tune.storage", "hwr.tune.spec"),
    "hwr.evaluation": ("hwr.tune.evaluation",),
    **{f"hwr.interop.jax_{m}": (f"hwr.interop.jax.{m}",) for m in ("common", "cnn", "rnn", "vit", "crnn", "train")},
    "hwr.interop.jax_random": ("hwr.interop.jax.random",),
    "hwr.interop.jax_families": ("hwr.interop.jax.families",),
}
RENAMED: dict[str, str] = {  # old dotted name -> new dotted name
    "hwr.study.storage": "hwr.tune.open_storage",
    "hwr.storage.storage": "hwr.tune.open_storage",
    "hwr.experiment.build_optimizer": "hwr.optim.from_config",
    "hwr.preparation.build_optimizer": "hwr.optim.from_config",
}
CONFIG_NAMES: dict[str, str] = {  # hwr.config names that moved out of it (the module stays, generic)
    "RunConfig": "hwr.tasks.digits.config",
    "FinetuneConfig": "hwr.tasks.digits.config",
    "ClassifierConfig": "hwr.tasks.digits.config",
    "VALIDATIONS": "hwr.tasks.digits.config",
    "OptimConfig": "hwr.optim",
    "LEGACY_EXECUTION_KEYS": "hwr.engine.execution",
}


def _resolve(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


class _Alias(types.ModuleType):
    """An old module path: its names looked up in the new homes."""

    def __getattr__(self, name: str) -> Any:
        if f"{self.__name__}.{name}" in RENAMED:
            return _resolve(RENAMED[f"{self.__name__}.{name}"])
        for home in MOVED[self.__name__]:
            module = importlib.import_module(home)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"{self.__name__}.{name} is gone; see hwr/_moved.py for where things moved")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        warnings.warn(
            f"{spec.name} moved to {MOVED[spec.name][0]} (hwr 0.2); the old path goes in the next release",
            DeprecationWarning,
            stacklevel=3,
        )
        return _Alias(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def config_name(name: str) -> Any:
    """A name ``hwr.config`` held before 0.2, from its new home (with a ``DeprecationWarning``)."""
    if name not in CONFIG_NAMES:
        raise AttributeError(f"module 'hwr.config' has no attribute {name!r}")
    warnings.warn(f"hwr.config.{name} moved to {CONFIG_NAMES[name]} (hwr 0.2)", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(CONFIG_NAMES[name]), name)


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
