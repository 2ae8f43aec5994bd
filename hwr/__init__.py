"""hwr: pure-functional handwriting recognition on torch.func.

Models are pure functions over parameter pytrees, optimizers are optax-shaped ``init``/``update`` pairs, and the
training step is one pure ``(state, batch) -> (state, metrics)`` function that ``torch.compile`` compiles whole.
"""

from hwr import losses, models, nn, optim, random, tree
from hwr.engine import train

__all__ = ["losses", "models", "nn", "optim", "random", "train", "tree"]
__version__ = "0.1.0"
