"""hwr.tasks.strings.confidence: each string confidence against a hand-computed case (the beam's against every
alignment enumerated), the frames past a string's content ignored, the reading's confidence from ``predict``'s
per-character ones, and the threshold fitted on a strings run's validation strings and stored (no temperature)."""

import itertools
import math
import shutil

import pytest
import torch
from tiny_runs import shared_run

from hwr import calibration, runs
from hwr.errors import InputError
from hwr.tasks import strings as sr
from hwr.tasks.strings import confidence as sc

BLANK = 2
PROBS = torch.tensor(
    [
        [[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8], [0.1, 0.5, 0.4]],  # greedy: 0 0 _ 1 -> "01"
        [[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8], [0.1, 0.5, 0.4]],  # the same, only 2 frames of content
        [[0.05, 0.05, 0.9], [0.1, 0.05, 0.85], [0.05, 0.05, 0.9], [0.1, 0.5, 0.4]],  # nothing read in 3 frames
    ],
    dtype=torch.float64,
)
FRAMES = torch.tensor([4, 2, 3])


def _labelling_probs(p: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Every labelling's probability, summed over its alignments (paths collapsed: repeats merged, blanks out)."""
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(p.shape[1]), repeat=p.shape[0]):
        merged = [c for i, c in enumerate(path) if c != BLANK and (i == 0 or path[i - 1] != c)]
        out[tuple(merged)] = out.get(tuple(merged), 0.0) + math.prod(float(p[t, c]) for t, c in enumerate(path))
    return out


def test_each_confidence_by_hand():
    logits = PROBS.log()
    dec, chars = sc.string_confidence(logits, FRAMES, blank=BLANK, kind="chars")
    assert dec.labels[0, :2].tolist() == [0, 1] and dec.lengths.tolist() == [2, 1, 0]
    assert chars.tolist() == pytest.approx([0.7 * 0.5, 0.7, 0.0])  # a character's confidence: its best frame
    _, path = sc.string_confidence(logits, FRAMES, blank=BLANK, kind="path")
    assert path.tolist() == pytest.approx([0.7 * 0.6 * 0.8 * 0.5, 0.7 * 0.6, 0.0])  # nothing read: 0
    _, weakest = sc.string_confidence(logits, FRAMES, blank=BLANK, kind="min_frame")
    assert weakest.tolist() == pytest.approx([0.5, 0.6, 0.0])
    _, reading = sc.string_confidence(logits, FRAMES, blank=BLANK, kind="reading")
    every = [_labelling_probs(PROBS[i, :n]) for i, n in enumerate(FRAMES.tolist())]
    assert reading.tolist() == pytest.approx([every[0][(0, 1)], every[1][(0,)], 0.0])  # over every alignment
    dec, beam = sc.string_confidence(logits, FRAMES, blank=BLANK, kind="beam")
    for i in range(2):
        best = max(every[i], key=every[i].get)
        assert tuple(dec.labels[i, : int(dec.lengths[i])].tolist()) == best
        assert beam[i].item() == pytest.approx(every[i][best])
    assert beam[2].item() == 0.0 and dec.lengths[2] == 0


def test_from_characters_is_the_product_and_nothing_read_is_never_trusted():
    assert sc.from_characters([0.7, 0.5]) == pytest.approx(0.35) and sc.from_characters([]) == 0.0


def test_an_unknown_kind_is_named():
    with pytest.raises(InputError, match=r"unknown string confidence 'best'.*chars"):
        sc.string_confidence(PROBS.log(), FRAMES, blank=BLANK, kind="best")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A copy (this file writes calibration.json into it) of the session's tiny strings run (``tiny_runs``)."""
    out = tmp_path_factory.mktemp("strings-confidence") / "run"
    shutil.copytree(shared_run(tmp_path_factory, "string"), out)
    return out


def test_scored_matches_predict_and_evaluate(run_dir):
    model, params, state, meta = sr.load_run(run_dir)
    config = sr.read_config(run_dir)
    val = sr.training.validation_set(config)
    conf, correct = sc.scored(model, params, state, val, mean=meta["mean"], std=meta["std"], batch_size=3)
    assert conf.shape == correct.shape == (config.val_strings,) and ((conf >= 0) & (conf <= 1)).all()
    s = sr.evaluate(model, params, state, val, mean=meta["mean"], std=meta["std"])
    assert correct.double().mean().item() == pytest.approx(s["string_accuracy"])
    crops = [im[..., : int(w)] for im, w in zip(val.images, val.widths)]
    width = config.data.width
    read = sr.predict(model, params, state, crops, mean=meta["mean"], std=meta["std"], width=width, beam=sc.BEAM)
    assert [sc.from_characters(c) for _, c in read] == pytest.approx(conf.tolist(), rel=1e-5)  # predict's path


def test_calibrate_stores_the_threshold_without_a_temperature(run_dir, tmp_path, monkeypatch):
    c = sc.calibrate(run_dir)
    assert c.temperature == 1.0 and c.confidence == sc.CONFIDENCE and c.note == sc.NOTE
    assert c.n == sr.read_config(run_dir).val_strings and runs.read_calibration(run_dir) == c
    conf = torch.linspace(0.05, 0.95, 20, dtype=torch.float64)
    correct = conf > 0.3  # the 6 least confident are wrong
    monkeypatch.setattr(sc, "_validation_scores", lambda *a: (conf, correct))
    stored = sc.with_thresholds(run_dir, [0.1])
    assert stored.threshold(0.1) == calibration.threshold_for_error(conf, correct, 0.1).threshold
    assert runs.read_calibration(run_dir).threshold(0.1) == stored.threshold(0.1)
    monkeypatch.setattr(sc, "_validation_scores", lambda *a: (conf, torch.zeros(20, dtype=torch.bool)))
    with pytest.raises(InputError, match="lowest error any threshold reaches is 1"):
        sc.with_thresholds(run_dir, [0.05])
