"""Optuna studies over the digit task: ``spec`` (a study's declaration), ``storage`` (SQLite or PostgreSQL, with
heartbeats), ``study`` (the objective and this worker's share of the trials), ``evaluation`` (the final,
once-only read of the test split), ``pool`` (independent runs in parallel processes).
"""

from hwr.tune import evaluation, pool, spec, storage, study
from hwr.tune.evaluation import evaluate_best, load_evaluation, select, verdict
from hwr.tune.pool import parallel_map
from hwr.tune.spec import PRUNERS, StudyContext, StudyError, StudySpec, load_spec
from hwr.tune.storage import DEFAULT_STORAGE, open_storage, open_study, with_installed_driver
from hwr.tune.study import (
    best_trial,
    config_of,
    optimize,
    prepare_source,
    prepare_zoo,
    pretrain,
    pretrain_job,
    trial_rows,
)

__all__ = [
    "DEFAULT_STORAGE",
    "PRUNERS",
    "StudyContext",
    "StudyError",
    "StudySpec",
    "best_trial",
    "config_of",
    "evaluate_best",
    "evaluation",
    "load_evaluation",
    "load_spec",
    "open_storage",
    "open_study",
    "optimize",
    "parallel_map",
    "pool",
    "prepare_source",
    "prepare_zoo",
    "pretrain",
    "pretrain_job",
    "select",
    "spec",
    "storage",
    "study",
    "trial_rows",
    "verdict",
    "with_installed_driver",
]
