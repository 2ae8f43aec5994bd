"""The per-trial and budget lines of ``hwr study run`` (issue 22): short, and naming the parameters that matter."""

import warnings

import numpy as np
import optuna

from hwr.report import study_log


def _study(n_params: int, n: int = 60) -> optuna.Study:
    rng = np.random.default_rng(0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        t = study.ask()
        xs = [t.suggest_float(f"p{i}", 0, 1) for i in range(n_params)]
        study.tell(t, 10 * xs[-1] + 0.01 * float(rng.normal()))  # only the last parameter matters
    return study


def test_a_trial_line_names_all_of_a_few_parameters_short():
    study = _study(2, n=3)
    line = study_log.trial_line(study, study.trials[0])
    assert line.startswith("trial 0 COMPLETE  value ")
    assert f"p0={study.trials[0].params['p0']:.3g}" in line and "p1=" in line and line.endswith(" s")


def test_many_parameters_show_the_most_important_first():
    study = _study(9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = study_log.shown_params(study, study.trials[-1].params)
    assert len(names) == study_log.SHOWN and names[0] == "p8"
    assert "(+3 more)" in study_log.trial_line(study, study.trials[-1])


def test_budget_line():
    counts = {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1}
    assert study_log.budget_line("tiny", 4, counts, "hwr study run tiny") == (
        "study tiny: budget of 4 trials reached (3 complete, 1 pruned, 1 failed)"
    )
    assert study_log.budget_line("tiny", 6, counts, "hwr study run tiny").endswith("continue with  hwr study run tiny")
