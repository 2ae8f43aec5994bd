"""hwr.tasks.digits.calibrate: a finished run carries calibration.json (the temperature fitted on its validation
split); ``calibrate`` refits the same temperature for a run trained before it existed; ``with_thresholds`` reads a
stored threshold and fits and stores a missing one; a run with no validation split is refused by name."""

import json

import pytest
import torch
from tiny import EAGER, run_config

from hwr import calibration, runs
from hwr.config import to_dict
from hwr.runs import RunError
from hwr.tasks import digits
from hwr.tasks.digits import calibrate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrate") / "run"
    digits.run(run_config(limit_train=512), out, execution=EAGER, write_figures=False)
    return out


def test_a_finished_run_holds_its_calibration(run_dir):
    c = runs.read_calibration(run_dir)
    assert c is not None and c.temperature > 0 and c.confidence == "max_softmax" and c.fitted_on == "val"
    assert c.n == 102 and c.thresholds == {}  # the validation split of limit_train=512: 512 // 5
    assert c.figures["nll_after"] <= c.figures["nll_before"]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["calibration"]["temperature"] == c.temperature
    on_disk = json.loads((run_dir / runs.CALIBRATION).read_text())
    assert on_disk["temperature"] == c.temperature and on_disk["fitted_on"] == "val" and on_disk["n"] == 102


def test_calibrate_refits_the_same_temperature_and_the_thresholds(run_dir, tmp_path):
    logits, labels = calibrate.validation_logits(run_dir)
    pred, conf = calibrate.confidence(logits, runs.read_calibration(run_dir).temperature)
    reachable = calibration.risk_coverage(conf, pred == labels).risk[len(labels) // 2 :].min().item()
    copy = tmp_path / "old"  # a run trained before calibration existed: no calibration.json
    copy.mkdir()
    for name in (runs.CONFIG, runs.CHECKPOINT, runs.METRICS):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    c = calibrate.calibrate(copy, targets=[reachable])
    assert c.temperature == runs.read_calibration(run_dir).temperature  # the same split, model and search
    want = calibration.threshold_for_error(conf, pred == labels, reachable)
    assert c.threshold(reachable) == want.threshold and runs.read_calibration(copy) == c


def test_with_thresholds_reads_a_stored_one_and_stores_a_missing_one(run_dir, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in (runs.CONFIG, runs.CHECKPOINT, runs.CALIBRATION):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    before = runs.read_calibration(copy)
    c = calibrate.with_thresholds(copy, [0.9])
    assert c.temperature == before.temperature and 0 <= c.threshold(0.9) <= 1
    assert runs.read_calibration(copy) == c

    def no_data(*args, **kwargs):
        raise AssertionError("a stored threshold is read, not fitted again")

    monkeypatch.setattr(calibrate, "validation_logits", no_data)
    assert calibrate.with_thresholds(copy, [0.9]) == c


def test_fit_logits_is_pure_and_matches_the_substrate():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(200, 10, generator=g) * 5, torch.randint(0, 10, (200,), generator=g)
    kept = logits.clone()
    c = calibrate.fit_logits(logits, labels, targets=[0.95])
    assert torch.equal(logits, kept) and c.temperature == calibration.fit_temperature(logits, labels)
    assert c.figures["nll_after"] == calibration.nll(logits, labels, c.temperature)
    assert c.n == 200 and set(c.thresholds) == {0.95}


def test_a_run_without_a_validation_split_is_refused(run_dir, tmp_path):
    fake = tmp_path / "heldout"
    fake.mkdir()
    (fake / runs.CONFIG).write_text(json.dumps(to_dict(run_config(validation="heldout"))))  # mnist has none
    (fake / runs.CHECKPOINT).write_bytes((run_dir / runs.CHECKPOINT).read_bytes())
    with pytest.raises(RunError, match="no held-out validation split"):
        calibrate.calibrate(fake)
    assert not (fake / runs.CALIBRATION).exists()
