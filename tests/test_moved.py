"""hwr._moved: every import path the 0.2 house move retired still imports for one release, warns naming the new
home, and its names (renamed ones included) resolve to the objects in their new homes."""

import importlib
import sys

import pytest

from hwr import _moved


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_every_old_path_imports_with_a_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {_moved.MOVED[old][0]}"):
        module = importlib.import_module(old)
    new = importlib.import_module(_moved.MOVED[old][0])
    public = [n for n in getattr(new, "__all__", []) if not n[0].islower() or callable(getattr(new, n))][:3]
    for name in public:
        assert getattr(module, name) is getattr(new, name)
    with pytest.raises(AttributeError, match="is gone"):
        module.no_such_name  # noqa: B018


def test_names_that_moved_between_modules():
    from hwr import optim, runs, tune

    sys.modules.pop("hwr.experiment", None), sys.modules.pop("hwr.study", None)
    with pytest.warns(DeprecationWarning):
        import hwr.experiment as experiment
        import hwr.study as study
    assert experiment.CHECKPOINT == runs.CHECKPOINT and experiment.RunError is runs.RunError
    assert experiment.build_optimizer is optim.from_config and study.storage is tune.open_storage
    assert study.StudySpec is tune.StudySpec


def test_config_names_moved_out_of_hwr_config():
    import hwr.config
    from hwr.optim import OptimConfig
    from hwr.tasks.digits.config import RunConfig

    with pytest.warns(DeprecationWarning, match="hwr.config.RunConfig moved"):
        assert hwr.config.RunConfig is RunConfig
    with pytest.warns(DeprecationWarning):
        assert hwr.config.OptimConfig is OptimConfig
    with pytest.raises(AttributeError):
        hwr.config.NoSuchThing  # noqa: B018
