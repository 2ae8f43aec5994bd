"""The study history figure names its metric on the y-axis and counts whole trials on the x-axis (issue 22)."""

import optuna
from matplotlib.ticker import MaxNLocator

from hwr.report import study_plots


def test_history_names_its_metric_and_counts_whole_trials(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for i in range(3):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.1 * i))
    fig = study_plots.history_figure(study, "val_macro_f1")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "val_macro_f1"
    assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
    fig.canvas.draw()  # Agg: a Figure without pyplot
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    paths = study_plots.save_study_plots(study, tmp_path, metric="val_macro_f1")
    assert tmp_path / "history.png" in paths


def _study_with_params() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 0.0, 1.0) + 0.1 * t.suggest_float("tau", 0.0, 1.0), n_trials=12)
    return study


def test_the_importance_plot_carries_one_title():
    """Optuna's importance plot titles itself at the left; ours names the evaluator and the metric, and Optuna's is
    cleared so the two never print over each other."""
    ax = study_plots._importances(_study_with_params(), "val_macro_f1")
    assert ax.get_title(loc="left") == ""
    assert ax.get_title() == "parameter importances (PED-ANOVA) for val_macro_f1"


def test_the_per_class_legend_sits_beside_the_bars():
    contenders = {
        name: {"per_class_f1_mean": [1.0 - 0.1 * i * j for j in range(3)], "macro_f1_mean": 0.9 - 0.1 * i}
        for i, name in enumerate(["zero_shot", "best", "start"])
    }
    fig = study_plots.per_class_figure({"contenders": contenders, "shot_groups": {"many": [2], "few": [0, 1]}})
    ax = fig.axes[0]
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1  # right of the plotting area: no bar is hidden
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero_shot (0.900)", "best (0.800)", "start (0.700)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "0", "1"]  # head ... tail
    assert ax.get_ylabel() == "test F1 (mean over the runs)"
    heights = [[b.get_height() for b in c] for c in ax.containers]
    assert heights[1] == [1.0 - 0.1 * 2, 1.0, 1.0 - 0.1]  # best's classes in head-to-tail order


def _history(direction: str, values: list[float]):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    for v in values:
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=v))
    return study_plots.history_figure(study, "m").axes[0]


def test_the_history_keeps_its_axis_on_the_trials_and_counts_the_far_ones():
    """One failed trial at 0.19 among values of 0.97-0.99 would squash the range the search moves in to a line: the
    axis stays on the trials and the x-label counts the one left off (where it covers no trial). Minimising, a
    far loss above the rest, and an infinite one, are left off alike; tied values and a spread without outliers
    keep matplotlib's axis."""
    ax = _history("maximize", [0.975, 0.19, 0.98, 0.982, 0.979, 0.985, 0.99, 0.988])
    low, high = ax.get_ylim()
    assert 0.95 < low < 0.975 and 0.99 < high < 1.0
    assert ax.get_xlabel() == "trial (1 trial(s) below the axis, worst 0.19)" and len(ax.texts) == 0
    ax = _history("minimize", [0.21, 0.2, 0.22, 0.19, 5.0, float("inf"), 0.205])
    assert ax.get_ylim()[1] < 0.23 and ax.get_xlabel() == "trial (2 trial(s) above the axis, worst inf)"
    for values in ([0.98] * 10 + [0.97], [0.3, 0.25, 0.2, 0.22]):
        ax = _history("maximize", values)
        assert ax.get_xlabel() == "trial" and ax.get_ylim()[0] < min(values) and ax.get_ylim()[1] > max(values)
