"""Bridges to other frameworks. ``hwr.interop.jax`` (optional extra ``jax``), the entry point: pytrees through
DLPack, Flax layouts and a JAX twin (forward) for every model family (``jax_<family>.py``, shared layers in
``jax_common``, ``hwr.random`` in ``jax_random``), training in JAX and back (``jax_train``), and checkpoints a JAX
user reads without torch.

Nothing in ``hwr`` imports this package; tests, benchmarks and the CLI do, so ``import hwr`` never needs JAX.
"""
