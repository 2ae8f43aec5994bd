"""The tiny configurations the tests train, written once: a seed-shaped CNN small enough that a step takes
milliseconds, and the run config a smoke run trains on 256 MNIST images."""

from pathlib import Path

from hwr.data import strings as ds
from hwr.engine.execution import Execution
from hwr.models.cnn import CNNConfig
from hwr.models.crnn import CRNNConfig
from hwr.optim import OptimConfig
from hwr.tasks.digits.config import RunConfig, SelfTrainConfig
from hwr.tasks.strings.config import StringsConfig

TESTS = Path(__file__).resolve().parent
TINY_STUDY = TESTS / "tiny_study.py"  # the study module the CLI and study tests run

TINY_CNN = CNNConfig(channels=(4, 8), hidden=16)  # conv4-conv8-fc16: the seed CNN's shape, a hundredth of its size
EAGER = Execution(device="cpu", compile=False)

# strings of up to 3 digits, 16 px high: a crnn small enough that an epoch of 3 steps takes a second
STRING_SPEC = ds.StringSpec(height=16, width=48, max_length=3, ink_height=12.0, margin=(1.0, 2.0), gap=(-1.0, 2.0))
STRINGS = StringsConfig(
    model_config=CRNNConfig(channels=(4, 8), hidden=8, proj=8, height=16),
    data=STRING_SPEC,
    epochs=2,
    steps=3,
    batch_size=8,
    val_strings=12,
    test_strings=12,
)


def run_config(**changes) -> RunConfig:
    """A digit run of the tiny CNN on 256 MNIST training images, one epoch of batch 64 (``changes`` replace fields)."""
    base = {
        "model_config": TINY_CNN,
        "epochs": 1,
        "batch_size": 64,
        "optim": OptimConfig("adam", 3e-3, "constant"),
        "limit_train": 256,
        "limit_test": 100,
    }
    return RunConfig(**{**base, **changes})


def self_training_config(**changes) -> RunConfig:
    """A self-training run of the tiny CNN on optdigits-lt (its 661 unlabelled images), 2 epochs of batch 16 for the
    teacher and as many for the run, threshold 0.5 (``changes`` replace fields)."""
    base = {
        "model_config": TINY_CNN,
        "dataset": "optdigits-lt",
        "validation": "heldout",
        "epochs": 2,
        "batch_size": 16,
        "optim": OptimConfig("adam", 3e-3, "constant"),
        "self_train": SelfTrainConfig(0.5),
    }
    return RunConfig(**{**base, **changes})
