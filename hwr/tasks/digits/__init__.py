"""The digit task: a classifier over single digit images (MNIST, its relatives, a user's long-tailed domain),
trained, fine-tuned and evaluated into a run folder. ``run`` is the one entry point; ``config`` holds
``RunConfig``, ``preparation`` what a run derives before its first step, ``finetune`` the fine-tuning levers,
``calibrate`` the temperature and reject thresholds fitted on the validation split, ``lockstep`` K runs of one
structure trained together in one vmapped step.
"""

from hwr.tasks.digits import calibrate, config, finetune, lockstep, preparation, training
from hwr.tasks.digits.config import VALIDATIONS, ClassifierConfig, FinetuneConfig, RunConfig
from hwr.tasks.digits.preparation import Prepared, RunKeys, prepare, read_config, run_keys
from hwr.tasks.digits.training import (
    Draw,
    RunFigures,
    evaluate,
    evaluate_run,
    load_run,
    make_batches,
    make_step,
    predict_run,
    run,
    unknown_classes,
)

__all__ = [
    "VALIDATIONS",
    "ClassifierConfig",
    "Draw",
    "FinetuneConfig",
    "Prepared",
    "RunConfig",
    "RunFigures",
    "RunKeys",
    "calibrate",
    "config",
    "evaluate",
    "evaluate_run",
    "finetune",
    "load_run",
    "lockstep",
    "make_batches",
    "make_step",
    "predict_run",
    "preparation",
    "prepare",
    "read_config",
    "run",
    "run_keys",
    "training",
    "unknown_classes",
]
