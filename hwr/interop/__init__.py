"""Bridges to other frameworks. ``hwr.interop.jax`` (optional extra ``jax``): pytrees through DLPack, Flax
layouts, a JAX forward of the CNN for parity, and checkpoints a JAX user reads without torch.

Nothing in ``hwr`` imports this package; tests, benchmarks and the CLI do, so ``import hwr`` never needs JAX.
"""
