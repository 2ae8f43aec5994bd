"""hwr: pure-functional handwriting recognition on torch.func.

Models are pure functions over parameter pytrees, optimizers are optax-shaped ``init``/``update`` pairs, and the
training step is one pure ``(state, batch) -> (state, metrics)`` function that ``torch.compile`` compiles whole.

The top-level names load on first use (PEP 562): ``import hwr`` imports no torch, so ``hwr --help`` is quick.
"""

from __future__ import annotations

import importlib
from typing import Any

from hwr import _moved

_moved.install()  # the import paths 0.2 retired still import, with a warning (hwr/_moved.py lists them all)

__all__ = ["losses", "models", "nn", "optim", "random", "train", "tree"]
__version__ = "0.2.0"

_LAZY = {"losses": "hwr.losses", "models": "hwr.models", "nn": "hwr.nn", "optim": "hwr.optim",
         "random": "hwr.random", "train": "hwr.engine.train", "tree": "hwr.tree"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'hwr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
