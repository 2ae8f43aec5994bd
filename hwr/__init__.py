"""hwr: pure-functional handwriting recognition on torch.func.

Models are pure functions over parameter pytrees, optimizers are optax-shaped ``init``/``update`` pairs, and the
training step is one pure ``(state, batch) -> (state, metrics)`` function that ``torch.compile`` compiles whole.
"""

from hwr import _moved, losses, models, nn, optim, random, tree
from hwr.engine import train

_moved.install()  # the import paths 0.2 retired still import, with a warning (hwr/_moved.py lists them all)

__all__ = ["losses", "models", "nn", "optim", "random", "train", "tree"]
__version__ = "0.2.0"
