"""Figures of an Optuna study: optimisation history, importances, parallel coordinates or the Pareto front, and
the per-class test F1 of an evaluation (classes ordered head to tail)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwr.report.figures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["history_figure", "per_class_figure", "save_study_plots"]


def history_figure(study: Any, metric: str = "value") -> Figure:
    """The optimisation history of the first objective: each completed trial's value and the best so far (in the
    study's direction) against the trial number; the y-axis names ``metric``, the x-axis counts whole trials."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if not done:
        raise ValueError("no completed trial to plot")
    pick = max if study.directions[0] == StudyDirection.MAXIMIZE else min
    numbers = [t.number for t in done]
    values = [t.values[0] for t in done]
    best = [pick(values[: i + 1]) for i in range(len(values))]
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(figsize=(9, 5))
    ax = fig.subplots()
    ax.scatter(numbers, values, s=18, label=metric)
    ax.step(numbers, best, where="post", color="tab:red", label=f"best {metric} so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"optimisation history: {metric}")
    _focus(ax, values, maximize=pick is max)
    ax.legend(fontsize=8)
    return fig


def _focus(ax: Any, values: list[float], *, maximize: bool) -> None:
    """Keep the y-axis on where the trials are: a few failed trials far below the rest (far above, minimising)
    would squash the range the search moves in to a line. Values beyond 3 interquartile ranges past the worse
    quartile, and infinite ones, are left off the axis and counted in the x-label, where they cover no trial; only
    where that makes the axis at least 5 times shorter (tied values, a study where most trials score alike, keep
    matplotlib's axis)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    q1, q3 = np.percentile(finite, [25, 75])
    edge = q1 - 3 * (q3 - q1) if maximize else q3 + 3 * (q3 - q1)
    kept = [v for v in finite if (v >= edge if maximize else v <= edge)]
    off = [v for v in values if not math.isfinite(v) or (v < edge if maximize else v > edge)]
    low, high = min(kept), max(kept)
    if not off or high == low or high - low > 0.2 * (max(finite) - min(finite)):
        return
    pad = 0.05 * (high - low)
    ax.set_ylim(low - pad, high + pad)
    worst = min(off) if maximize else max(off)
    where = "below" if maximize else "above"
    ax.set_xlabel(f"trial ({len(off)} trial(s) {where} the axis, worst {worst:.3g})")


def _importances(study: Any, metric: str) -> Any:
    """Optuna's importance plot through ``hwr.tune.importance_inputs``: PED-ANOVA in the study's direction."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    from hwr.tune.study import IMPORTANCE_EVALUATOR, importance_inputs

    with importance_inputs(study) as (evaluator, target), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_param_importances(study, evaluator=evaluator, target=target, target_name=metric)
    ax.set_title("", loc="left")  # Optuna's own title sits there and would print over this one
    ax.set_title(f"parameter importances ({IMPORTANCE_EVALUATOR}) for {metric}")
    return ax


def save_study_plots(
    study: Any, out: Path, evaluation: dict[str, Any] | None = None, metric: str = "value"
) -> list[Path]:
    """Optimisation history and importances of the first objective (``metric`` names it), parallel coordinates
    or Pareto front, and per-class test F1 of the best configuration against the untuned baseline (when
    ``evaluation`` from ``hwr study best --evaluate``)."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    written = []
    multi = len(study.directions) > 1
    plots = {
        "history.png": lambda: history_figure(study, metric),
        "importances.png": lambda: _importances(study, metric),
    }
    if multi:
        plots["pareto.png"] = lambda: ovm.plot_pareto_front(study)
    else:
        plots["parallel.png"] = lambda: ovm.plot_parallel_coordinate(study)
    for fname, make in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                ax = make()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # too few trials for this plot
        fig = ax if hasattr(ax, "savefig") else ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(9, 5)
        written.append(save_figure(fig, out / fname))
    if evaluation:
        written.append(save_figure(per_class_figure(evaluation), out / "per_class_f1.png"))
    return written


def per_class_figure(evaluation: dict[str, Any]) -> Figure:
    """Per-class test F1 of every contender of ``hwr study best --evaluate`` (its ``evaluation.json``), classes
    ordered head to tail, each contender's macro-F1 in the legend, which sits beside the bars, never over them."""
    c = evaluation["contenders"]
    fig = new_figure(figsize=(10, 4), layout="constrained")
    ax = fig.subplots()
    k = len(c["best"]["per_class_f1_mean"])
    groups = evaluation.get("shot_groups") or {}
    order = [cls for g in ("many", "medium", "few") for cls in groups.get(g, [])] or list(range(k))
    width = 0.8 / len(c)
    for i, (label, r) in enumerate(c.items()):
        ax.bar(
            np.arange(k) + i * width,
            [r["per_class_f1_mean"][j] for j in order],
            width,
            label=f"{label} ({r['macro_f1_mean']:.3f})",
        )
    ax.set_xticks(np.arange(k) + 0.4 - width / 2, [str(i) for i in order])
    ax.set_xlabel("class (head ... tail of the training set)")
    ax.set_ylabel("test F1 (mean over the runs)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("per-class test F1: best trial vs baselines")
    return fig
