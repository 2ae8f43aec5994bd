"""The lines ``hwr study run`` prints as it goes, readable in a log or CI as on a terminal: one per finished trial
(number, state, value, the parameters that matter, seconds) and one when the study's budget is reached."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["budget_line", "shown_params", "trial_line"]

SHOWN = 6  # parameters a trial line names: all of them up to this many, else the most important


def _short(v: Any) -> str:
    """A parameter value in a few characters: floats to 3 significant digits, the rest as they print."""
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def shown_params(study: Any, params: dict[str, Any], limit: int = SHOWN) -> list[str]:
    """The names of ``params`` worth a trial line: all when there are at most ``limit``, else the ``limit`` with
    the highest importance in ``study`` so far (``hwr.tune.study.param_importances``), in their own order when
    importances cannot be computed yet (too few trials)."""
    if len(params) <= limit:
        return list(params)
    from hwr.tune.study import param_importances

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials": then the first ones are shown
            ranked = [k for k in param_importances(study) if k in params]
    except (RuntimeError, ValueError, ZeroDivisionError):
        ranked = []
    ranked += [k for k in params if k not in ranked]
    return ranked[:limit]


def trial_line(study: Any, trial: Any, limit: int = SHOWN) -> str:
    """One line for a finished trial, e.g. ``trial 3 COMPLETE  value 0.8123  hidden=32 lr=0.00354  12 s``; a
    pruned or failed trial says why where it was recorded."""
    parts = [f"trial {trial.number} {trial.state.name}"]
    if trial.values:
        parts.append(("value " if len(trial.values) == 1 else "values ") + ", ".join(f"{v:.4g}" for v in trial.values))
    elif trial.intermediate_values:
        step = max(trial.intermediate_values)
        parts.append(f"after epoch {step + 1} at {trial.intermediate_values[step]:.4g}")
    names = shown_params(study, trial.params, limit)
    if names:
        more = len(trial.params) - len(names)
        parts.append(" ".join(f"{k}={_short(trial.params[k])}" for k in names) + (f" (+{more} more)" if more else ""))
    if trial.duration is not None:
        parts.append(f"{trial.duration.total_seconds():.0f} s")
    if trial.user_attrs.get("failure"):
        parts.append(trial.user_attrs["failure"])
    return "  ".join(parts)


def budget_line(name: str, n_trials: int, counts: dict[str, int], rerun: str) -> str:
    """Where the study ``name`` stands against its budget of ``n_trials`` finished (COMPLETE + PRUNED) trials,
    from ``hwr.tune.study.trial_counts``; short of it (a timeout, a stopped worker), the command ``rerun`` that
    continues it."""
    done = f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed"
    if counts["COMPLETE"] + counts["PRUNED"] >= n_trials:
        return f"study {name}: budget of {n_trials} trials reached ({done})"
    return f"study {name}: {counts['COMPLETE'] + counts['PRUNED']} of {n_trials} trials finished ({done}); continue with  {rerun}"
