"""The tasks, one package each (``digits``, ``strings``), and the registry commands dispatch through: a run
folder's ``config.json`` names its task (``hwr.runs.task_of``), and ``of(run_dir)`` is that task's package. Tasks
never import each other; what two of them share lives in ``hwr.runs`` or ``hwr.engine``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from hwr import runs
from hwr.errors import UnknownNameError

__all__ = ["NAMES", "get", "of"]

NAMES = ("digits", "strings")


def get(name: str) -> ModuleType:
    """The task package ``name`` (``hwr.tasks.digits``, ``hwr.tasks.strings``)."""
    if name not in NAMES:
        raise UnknownNameError(f"unknown task {name!r}; choose one of {list(NAMES)}")
    return importlib.import_module(f"hwr.tasks.{name}")


def of(run_dir: str | Path) -> ModuleType:
    """The task package of a run folder (``RunError`` for a folder that is not a run)."""
    return get(runs.task_of(run_dir))
