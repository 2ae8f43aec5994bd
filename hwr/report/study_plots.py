"""Figures of an Optuna study: optimisation history, importances, parallel coordinates or the Pareto front, and
the per-class test F1 of an evaluation (classes ordered head to tail)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hwr.report.figures import save_figure

__all__ = ["save_study_plots"]


def save_study_plots(study: Any, out: Path, evaluation: dict[str, Any] | None = None) -> list[Path]:
    """Optimisation history, importances, parallel coordinates or Pareto front, and per-class test F1 of the
    best configuration against the untuned baseline (when ``evaluation`` from ``hwr study best --evaluate``)."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    name0 = "first objective" if multi else "value"
    plots = {
        "history.png": lambda: ovm.plot_optimization_history(study, target=target, target_name=name0),
        "importances.png": lambda: ovm.plot_param_importances(study, target=target, target_name=name0),
    }
    if multi:
        plots["pareto.png"] = lambda: ovm.plot_pareto_front(study)
    else:
        plots["parallel.png"] = lambda: ovm.plot_parallel_coordinate(study)
    for fname, make in plots.items():
        try:
            ax = make()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # too few trials for this plot
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(9, 5)
        written.append(save_figure(fig, out / fname))
    if evaluation:
        c = evaluation["contenders"]
        fig = Figure(figsize=(9, 4))
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
        ax.set_ylabel("test F1 (mean over seeds)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title("per-class test F1: best trial vs baselines")
        written.append(save_figure(fig, out / "per_class_f1.png"))
    return written
