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
