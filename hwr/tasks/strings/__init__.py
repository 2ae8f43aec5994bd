"""The strings task: whole digit strings (postcodes, amounts) read without segmentation by a CTC model trained on
synthetic strings of MNIST digits. ``run`` is the one entry point; ``config`` holds ``StringsConfig``, ``step``
the CTC objective and evaluation, ``read`` the reading of real images, ``segment`` the segment-then-classify
baseline, ``confidence`` a whole reading's confidence and the run's reject threshold.
"""

from hwr.tasks.strings import confidence, config, read, segment, step, training
from hwr.tasks.strings.config import TASK, StringsConfig
from hwr.tasks.strings.read import MAX_WIDTH, normalise_string, predict
from hwr.tasks.strings.step import StringBatch, StringBatches, ctc_objective, eval_step, evaluate, train_step
from hwr.tasks.strings.training import (
    Prepared,
    StringsFigures,
    alphabet_of,
    is_strings_run,
    load_run,
    make_step,
    prepare,
    read_config,
    run,
)

__all__ = [
    "MAX_WIDTH",
    "TASK",
    "Prepared",
    "StringBatch",
    "StringBatches",
    "StringsConfig",
    "StringsFigures",
    "alphabet_of",
    "confidence",
    "config",
    "ctc_objective",
    "eval_step",
    "evaluate",
    "is_strings_run",
    "load_run",
    "make_step",
    "normalise_string",
    "predict",
    "prepare",
    "read",
    "read_config",
    "run",
    "segment",
    "step",
    "train_step",
    "training",
]
