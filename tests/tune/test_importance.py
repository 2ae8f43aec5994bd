"""Parameter importances rank what makes the objective good in the study's own direction (issue 22): a maximised
study whose value is 10 x + noise(y) ranks x first, as importances of the negated value do, with no warning."""

import warnings

import numpy as np
import optuna
import pytest
from optuna.importance import PedAnovaImportanceEvaluator

from hwr import report, tune


def _study(direction: str, n: int = 60) -> optuna.Study:
    rng = np.random.default_rng(0)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for _ in range(n):
        t = study.ask()
        x, y = t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)
        study.tell(t, 10 * x + 0.01 * float(rng.normal()) * y)
    return study


def _reference(study: optuna.Study) -> dict[str, float]:
    """Importances of the lower-is-better target that puts the best trials first: the negated value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator(), target=lambda t: -t.value
        )


def test_a_maximised_study_ranks_what_makes_it_high_first_without_warnings():
    study = _study("maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any Optuna warning fails the test
        imp = tune.study.param_importances(study)
    assert next(iter(imp)) == "x"
    assert imp == pytest.approx(_reference(study))


def test_the_table_names_the_evaluator_and_ranks_x_first():
    table = report.importance_table(_study("maximize"))
    assert "PED-ANOVA" in table.title and "highest" in table.title
    assert next(iter(table.columns[0].cells)) == "x"


def test_multi_objective_reads_the_first_objective_in_its_direction():
    rng = np.random.default_rng(1)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(60):
        t = study.ask()
        x, y = t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)
        study.tell(t, [10 * x + 0.01 * float(rng.normal()) * y, y])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imp = tune.study.param_importances(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = optuna.importance.get_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator(), target=lambda t: -t.values[0]
        )
    assert next(iter(imp)) == "x" and imp == pytest.approx(ref)
