"""``hwr.experiment.run`` options that change how a run computes but not what: the channels-last memory format."""

import pytest
import torch

from hwr import checkpoint, experiment
from hwr.config import RunConfig
from hwr.models.cnn import CNNConfig

SMALL = dict(model_config=CNNConfig(channels=(8, 16), hidden=32), epochs=1, batch_size=64, limit_train=640,
             limit_test=200, compile=False)


def test_channels_last_run_equals_contiguous_run(tmp_path):
    runs = {}
    for fmt in ("contiguous", "channels_last"):
        out = tmp_path / fmt
        experiment.run(RunConfig(memory_format=fmt, **SMALL), out)
        runs[fmt] = checkpoint.load_flat(out / experiment.CHECKPOINT)[0]
        assert experiment.read_config(out).memory_format == fmt
    a, b = runs["contiguous"], runs["channels_last"]
    assert a.keys() == b.keys()
    for k in a:  # same function, sums in another order: equal up to float rounding after 9 Adam steps
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("params."))  # it really ran NHWC


def test_unknown_memory_format_is_refused():
    with pytest.raises(ValueError, match="memory_format must be one of"):
        RunConfig(memory_format="nhwc")
