"""hwr.tasks.digits.lockstep: K digit runs of one structure trained in one vmapped step reach what ``digits.run``
reaches for each config on its own (parameters, validation figures, training losses, post-training), eagerly and
compiled; configs of different structure are refused with the fix."""

import dataclasses

import pytest
import torch
from tiny import EAGER, run_config

from hwr import checkpoint, runs, tree
from hwr.data.augment import AugmentConfig
from hwr.engine import execution as ex
from hwr.engine.execution import Execution
from hwr.losses import LossConfig
from hwr.optim import OptimConfig
from hwr.tasks import digits
from hwr.tasks.digits.config import ClassifierConfig
from hwr.tasks.digits.lockstep import train_lockstep


def _config(seed: int, lr: float, rotation: float, tau: float, **changes):
    return run_config(
        seed=seed,
        optim=OptimConfig("adamw", lr, "cosine", weight_decay=1e-4),
        augment=AugmentConfig(rotation=rotation, translate=1.0),
        loss=LossConfig("logit_adjust", tau=tau),
        **changes,
    )


CONFIGS = [
    _config(0, 3e-3, 10.0, 1.0, epochs=2),
    _config(1, 1e-3, 5.0, 0.5, epochs=2, classifier=ClassifierConfig(posthoc_tau=1.0)),
    _config(2, 2e-3, 15.0, 1.5, epochs=2),
]


def _assert_trial_is_the_run(trial, result, params):
    for name, x in tree.flatten_names(trial.params).items():
        torch.testing.assert_close(x, params[f"params.{name}"], rtol=1e-5, atol=1e-6, msg=name)
    assert trial.val["confusion"] == result["val"]["confusion"]
    assert trial.val["loss"] == pytest.approx(result["val"]["loss"], rel=1e-5)
    assert trial.post_training == result["post_training"]
    for mine, theirs in zip(trial.history, result["epochs"], strict=True):
        assert mine["epoch"] == theirs["epoch"]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert mine["train_accuracy"] == theirs["train_accuracy"]


def test_lockstep_trials_equal_separate_runs(tmp_path):
    trials, built = train_lockstep(CONFIGS, execution=EAGER)
    assert built == {"compile": False, "memory_format": "contiguous", "trials": 3}
    for i, (cfg, trial) in enumerate(zip(CONFIGS, trials, strict=True)):
        result = digits.run(cfg, tmp_path / str(i), execution=EAGER, test_split=False, write_figures=False)
        params = checkpoint.load_flat(tmp_path / str(i) / runs.CHECKPOINT)[0]
        assert trial.config == cfg
        _assert_trial_is_the_run(trial, result, params)
    assert trials[1].post_training == {"posthoc_tau": 1.0} and trials[0].post_training == {}
    assert len({round(t.history[-1]["train_loss"], 6) for t in trials}) == 3  # the trials really differ


def test_compiled_lockstep_equals_eager_lockstep():
    """The one inductor compile here: two tiny trials, one epoch; the compiled vmapped step (shared per structure
    and K) against the eager one."""
    configs = [dataclasses.replace(c, epochs=1) for c in CONFIGS[:2]]
    eager, _ = train_lockstep(configs, execution=EAGER)
    ex.release_shared()
    compiled, built = train_lockstep(configs, execution=Execution(device="cpu", memory_format="contiguous"))
    ex.release_shared()
    assert built["compile"] and built["candidate"] == "inductor" and built["trials"] == 2
    for a, b in zip(compiled, eager, strict=True):  # inductor sums in another order; Adam turns the rounding of
        torch.testing.assert_close(a.params, b.params, rtol=1e-3, atol=1e-4)  # near-zero gradients into ~1% of lr
        assert a.val["count"] == b.val["count"]
        assert a.val["loss"] == pytest.approx(b.val["loss"], rel=1e-3)


def test_lockstep_refuses_configs_of_different_structure():
    with pytest.raises(ValueError, match=r"config 1 differs from config 0 in \['augment'\].*group them by"):
        train_lockstep([CONFIGS[0], dataclasses.replace(CONFIGS[1], augment=AugmentConfig())], execution=EAGER)
    with pytest.raises(ValueError, match=r"config 2 differs from config 0 in \['epochs'\]"):
        train_lockstep([*CONFIGS[:2], dataclasses.replace(CONFIGS[2], epochs=3)], execution=EAGER)
    with pytest.raises(ValueError, match=r"in \['batch_size'"):
        train_lockstep([CONFIGS[0], dataclasses.replace(CONFIGS[1], batch_size=32)], execution=EAGER)
    with pytest.raises(ValueError, match="at least one RunConfig"):
        train_lockstep([], execution=EAGER)
