import subprocess
import sys

import pytest
import torch

from hwr import checkpoint, models, optim, random, tree
from hwr.engine import train


@pytest.fixture
def state():
    m = models.get("cnn")
    return train.init_state(m, optim.adam(optim.onecycle(1e-3, 10)), random.key(3))


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(tree.leaves(a), tree.leaves(b), strict=True))


def test_round_trip_exact(tmp_path, state):
    path = checkpoint.save(tmp_path / "c.safetensors", state, {"epochs_done": 2, "note": "x"})
    template = train.init_state(models.get("cnn"), optim.adam(optim.onecycle(1e-3, 10)), random.key(99))
    loaded = checkpoint.load(path, template)
    assert type(loaded) is train.TrainState
    assert _equal(loaded, state)
    assert checkpoint.read_metadata(path) == {"epochs_done": 2, "note": "x"}


def test_a_float64_step_counter_of_an_older_run_loads_as_the_int64_it_is_now(tmp_path, state):
    """Runs before 2026-12-07 stored the optimizer's counters as float64 0-d whole numbers; they load (and resume)
    as int64. A fractional one, or a float64 where the template holds anything but an int64 0-d, is still refused."""
    stepped = state._replace(opt_state=tree.map(lambda t: t + 7 if t.dtype == torch.int64 else t, state.opt_state))
    older = stepped._replace(
        opt_state=tree.map(lambda t: t.double() if t.dtype == torch.int64 else t, stepped.opt_state)
    )
    assert {t.dtype for t in tree.leaves(older.opt_state)} == {torch.float64, torch.float32}
    loaded = checkpoint.load(checkpoint.save(tmp_path / "old.safetensors", older), state)
    assert _equal(loaded, stepped) and loaded.opt_state[0].count.dtype == torch.int64
    assert int(loaded.opt_state[0].count) == 7
    half = older._replace(opt_state=tree.map(lambda t: t + 0.5 if t.dtype == torch.float64 else t, older.opt_state))
    with pytest.raises(checkpoint.CheckpointError, match="float64"):
        checkpoint.load(checkpoint.save(tmp_path / "half.safetensors", half), state)
    wide = state._replace(params=tree.map(torch.Tensor.double, state.params))
    with pytest.raises(checkpoint.CheckpointError, match="float64"):
        checkpoint.load(checkpoint.save(tmp_path / "wide.safetensors", wide), state)


def test_readable_with_safetensors_numpy_only(tmp_path, state):
    path = checkpoint.save(tmp_path / "c.safetensors", state)
    code = (
        "import sys; from safetensors.numpy import load_file; d = load_file(sys.argv[1]); "
        "assert 'torch' not in sys.modules; print(d['params.block1.conv1.kernel'].shape)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(32, 1, 3, 3)"


def test_other_architecture_refused(tmp_path, state):
    path = checkpoint.save(tmp_path / "c.safetensors", state)
    other = models.get("cnn", models.cnn.CNNConfig(channels=(16, 64)))
    template = train.init_state(other, optim.adam(1e-3), random.key(0))
    with pytest.raises(checkpoint.CheckpointError, match="another architecture"):
        checkpoint.load(path, template)
    deeper = models.get("cnn", models.cnn.CNNConfig(channels=(32, 64, 64)))
    with pytest.raises(checkpoint.CheckpointError, match="lacks"):
        checkpoint.load(path, train.init_state(deeper, optim.adam(1e-3), random.key(0)))


def test_tensors_the_template_lacks_are_refused_unless_outside_its_fields(tmp_path, state):
    """An Adam run loaded into an SGD template, or a model with a layer fewer, is refused naming the extra tensors;
    reading only some fields of a run (its params and model state, as ``hwr.runs.load_run``) is not."""
    path = checkpoint.save(tmp_path / "c.safetensors", state)
    sgd = train.init_state(models.get("cnn"), optim.sgd(0.1), random.key(0))
    with pytest.raises(checkpoint.CheckpointError, match=r"holds \d+ tensor\(s\) the model does not have.*opt_state"):
        checkpoint.load(path, sgd)
    shallower = models.get("cnn", models.cnn.CNNConfig(channels=(32,)))
    with pytest.raises(checkpoint.CheckpointError, match="does not have"):
        checkpoint.load(path, {"params": shallower.init(random.key(0)), "model_state": {}})
    part = checkpoint.load(path, {"params": models.get("cnn").init(random.key(0)), "model_state": {}})
    assert _equal(part["params"], state.params)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_refused(tmp_path, state, damage):
    path = checkpoint.save(tmp_path / "c.safetensors", state)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 64 + data[64:], "empty": b""}[damage])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path, state)


def test_missing_file(tmp_path, state):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "nope.safetensors", state)


def test_save_does_not_touch_state(tmp_path, state):
    before = tree.map(torch.clone, state)
    checkpoint.save(tmp_path / "c.safetensors", state)
    assert _equal(before, state)
