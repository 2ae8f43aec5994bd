"""hwr.serve.reader: a reading of uploaded bytes equals ``hwr predict``'s reading of the same file (digits and
strings), its JSON shape, the reject threshold and its "?", determinism, and the errors of bad bytes and bad
run folders."""

import json
import shutil

import pytest
import torch
from tiny_runs import SEVEN, TWO_STROKES, png, shared_run

from hwr import runs, tree
from hwr.data import augment, digits
from hwr.errors import InputError
from hwr.serve import reader as rd
from hwr.tasks import digits as digit_task
from hwr.tasks import strings as string_task
from hwr.tasks.strings.confidence import BEAM


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "digit")


@pytest.fixture(scope="module")
def string_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "string")


def test_digit_reading_equals_predicts_reading_of_the_file(digit_run, tmp_path):
    """The bytes go the way ``hwr predict`` takes a file: load_image, mnist_style, the run's normalisation."""
    r = rd.load(digit_run)
    got = rd.read(r, SEVEN, "seven.png")
    (tmp_path / "seven.png").write_bytes(SEVEN)
    model, params, state, meta = digit_task.load_run(digit_run)
    x = digits.mnist_style(digits.load_image(tmp_path / "seven.png"))[None]
    with torch.inference_mode():
        logits = model.apply(
            params, state, augment.make_transform(None, meta["mean"], meta["std"])(None, x), train=False
        )
    stored = runs.read_calibration(digit_run)  # the temperature training fitted
    t = 1.0 if stored is None else stored.temperature
    probs = torch.softmax(logits[0].double() / t, -1)[0]
    top_p, top_i = probs.topk(3)
    assert got["alternatives"] == [[str(meta["classes"][i]), p] for p, i in zip(top_p.tolist(), top_i.tolist())]
    assert got["text"] == got["alternatives"][0][0] and got["temperature"] == t
    assert got["confidence"] == pytest.approx(got["alternatives"][0][1], rel=1e-12)
    assert got["kind"] == "digit" and got["characters"] == [
        {"char": got["text"], "confidence": got["confidence"], "rejected": got["rejected"]}
    ]
    assert json.loads(json.dumps(got)) == got  # JSON-able as it is


def test_string_reading_equals_predicts_reading_of_the_file(string_run, tmp_path):
    r = rd.load(string_run)
    got = rd.read(r, TWO_STROKES)
    (tmp_path / "s.png").write_bytes(TWO_STROKES)
    model, params, state, meta = string_task.load_run(string_run)
    x = string_task.normalise_string(digits.load_image(tmp_path / "s.png", string=True), r.spec)  # as predict reads
    [(labels, conf)] = string_task.predict(
        model, params, state, [x], mean=meta["mean"], std=meta["std"], width=r.spec.width, beam=BEAM
    )
    assert got["kind"] == "string" and got["text"] == "".join(map(str, labels)) and "alternatives" not in got
    assert [c["confidence"] for c in got["characters"]] == conf
    assert got["confidence"] == pytest.approx(float(torch.tensor(conf, dtype=torch.float64).prod()))  # 1 if empty
    assert json.loads(json.dumps(got)) == got


@pytest.mark.parametrize("kind", ["digit", "string"])
def test_reject_threshold_marks_characters_with_a_question_mark(kind, digit_run, string_run):
    run, data = (digit_run, SEVEN) if kind == "digit" else (string_run, TWO_STROKES)
    strict = rd.read(rd.load(run, reject_below=1.0), data)
    assert strict["rejected"] and strict["reject_below"] == 1.0
    assert strict["shown"] == "?" * len(strict["characters"]) and all(c["rejected"] for c in strict["characters"])
    lax = rd.read(rd.load(run, reject_below=0.0), data)
    assert lax["shown"] == lax["text"] and not any(c["rejected"] for c in lax["characters"])
    assert lax["rejected"] == (lax["text"] == "")  # a string read as nothing is rejected whatever the threshold


def test_calibration_comes_from_the_run_folder_unless_given(digit_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digit_run, run)
    (run / runs.CALIBRATION).unlink(missing_ok=True)
    assert rd.calibration(run) == rd.Calibration(1.0, rd.DEFAULT_REJECT, "the default (calibration.json holds none)")
    plain = rd.read(rd.load(run), SEVEN)
    fitted = {
        0.05: {"threshold": 0.6, "coverage": 0.9, "error": 0.05},
        0.01: {"threshold": 0.8, "coverage": 0.7, "error": 0.01},
    }
    runs.write_calibration(run, runs.Calibration(temperature=2.0, thresholds=fitted))
    assert rd.calibration(run) == rd.Calibration(2.0, 0.8, "calibration.json (target error 0.01)")  # the most careful
    assert rd.calibration(run, 0.3) == rd.Calibration(2.0, 0.3, "--reject-below")
    warm = rd.read(rd.load(run), SEVEN)
    assert warm["text"] == plain["text"] and warm["temperature"] == 2.0 and warm["reject_below"] == 0.8
    assert warm["confidence"] < plain["confidence"]  # a temperature above 1 flattens the softmax


def test_reading_is_deterministic_and_leaves_the_run_as_it_was(digit_run):
    r = rd.load(digit_run)
    before = [t.clone() for t in tree.leaves((r.params, r.model_state))]
    assert rd.read(r, SEVEN) == rd.read(r, SEVEN)
    after = tree.leaves((r.params, r.model_state))
    assert len(after) == len(before) > 0 and all(torch.equal(a, b) for a, b in zip(after, before))


def test_bad_bytes_and_bad_folders_are_clear_errors(digit_run, tmp_path):
    r = rd.load(digit_run)
    with pytest.raises(InputError, match=r"notes\.txt: not an image file"):
        rd.read(r, b"a shopping list, not a picture", "notes.txt")
    with pytest.raises(InputError, match=r"blank\.png: no ink found"):
        rd.read(r, png((50, 50), []), "blank.png")
    with pytest.raises(InputError, match="upload: cannot decode the image"):
        rd.read(r, SEVEN[: len(SEVEN) // 2])
    with pytest.raises(runs.RunError, match="not a run folder"):
        rd.load(tmp_path)
    with pytest.raises(InputError, match=r"must lie in \[0, 1\], got 1.5"):
        rd.load(digit_run, reject_below=1.5)
