"""The engine every task trains through: ``train`` (the state, the one pure step over a task's objective, its
evaluation twin, the compile helper and the fit loop), ``execution`` (the only place an ``Execution`` becomes a
step), ``autotune`` (the fastest equivalent compile configuration), ``stacked`` (K trials of one structure in one
vmapped step), ``perf`` (model wrappers: channels-last, autocast) and ``runtime`` (process settings and device
helpers).
"""

from hwr.engine import autotune, execution, perf, runtime, stacked, train

__all__ = ["autotune", "execution", "perf", "runtime", "stacked", "train"]
