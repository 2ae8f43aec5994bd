"""`hwr calibrate`, and the calibration side of `hwr evaluate` and `hwr predict`, end to end on tiny runs trained
in the library: a digit run as trained before calibration existed (no calibration.json) is calibrated, evaluated
(ECE, NLL, risk-coverage, the reliability diagram) and reads real PNG files with '?' beside the doubtful ones; a
strings run is evaluated with its string confidence; every bad flag is one line and exit code 2."""

import json
import shutil

import pytest
from cli_run import hwr
from PIL import Image, ImageDraw, ImageFont
from tiny import EAGER, run_config
from tiny_runs import shared_run

from hwr import calibration, cli, runs
from hwr.config import to_dict
from hwr.data import sources
from hwr.tasks import digits, strings
from hwr.tasks.digits import calibrate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrate") / "digits"
    digits.run(run_config(limit_train=512), out, execution=EAGER, write_figures=False)
    (out / runs.CALIBRATION).unlink()  # as a run trained before calibration existed
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three MNIST test digits as PNG files."""
    folder = tmp_path_factory.mktemp("images")
    test = sources.load("mnist")
    paths = []
    for i in range(3):
        Image.fromarray(test.test_images[i, 0].numpy()).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


def _reachable(run) -> float:
    """An error target the validation split reaches (the error among its more confident half)."""
    logits, labels = calibrate.validation_logits(run)
    pred, conf = calibrate.confidence(logits, calibration.fit_temperature(logits, labels))
    return round(calibration.risk_coverage(conf, pred == labels).risk[len(labels) // 2 :].min().item() + 0.01, 4)


def test_calibrate_evaluate_and_predict_a_digit_run(digit_run, images, tmp_path, capsys):
    target = _reachable(digit_run)
    p = hwr("calibrate", str(digit_run), "--target-error", str(target), fresh=True)  # the console script
    assert "temperature" in p.stdout and "ECE (15 bins)" in p.stdout and "reject thresholds" in p.stdout
    c = runs.read_calibration(digit_run)
    assert c.n == 102 and c.threshold(target) is not None
    p = hwr("evaluate", str(digit_run), "--out", str(tmp_path / "ev"))
    for words in ("ECE (15 bins)", "calibrated (calibration.json)", "AURC", "perfect ranking", "stored reject"):
        assert words in p.stdout, p.stdout
    assert Image.open(tmp_path / "ev" / "reliability.png").size[0] > 500
    assert cli.main(["predict", "--run", str(digit_run), "--target-error", str(target), *images]) == 0
    out = capsys.readouterr().out
    assert f"reject below P = {c.threshold(target):.4f}" in out and "calibrated predictions" in out and "check" in out
    assert runs.read_calibration(digit_run) == c  # read, not fitted again


def test_reject_below_marks_the_readings_below_it(digit_run, images, capsys):
    assert cli.main(["predict", "--run", str(digit_run), "--reject-below", "1.0", *images]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if ".png" in line]
    assert len(rows) == 3 and all(row.rstrip(" │|").endswith("?") for row in rows), rows
    assert cli.main(["predict", "--run", str(digit_run), "--reject-below", "0", *images]) == 0
    assert "?" not in capsys.readouterr().out


def _refused(capsys, *argv: str, match: str) -> None:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_bad_flags_are_one_line(digit_run, images, tmp_path, capsys):
    run = str(digit_run)
    _refused(capsys, "predict", "--run", run, "--reject-below", "1.5", *images, match="--reject-below must be")
    _refused(capsys, "predict", "--run", run, "--target-error", "0", *images, match="strictly between 0 and 1")
    _refused(
        capsys, "predict", "--run", run, "--reject-below", "0.5", "--target-error", "0.01", *images, match="not both"
    )
    _refused(capsys, "calibrate", run, "--target-error", "1", match="strictly between 0 and 1")
    fake = tmp_path / "heldout"  # a config whose protocol has no validation split (mnist has no held-out one)
    fake.mkdir()
    (fake / runs.CONFIG).write_text(json.dumps(to_dict(run_config(validation="heldout"))))
    (fake / runs.CHECKPOINT).write_bytes((digit_run / runs.CHECKPOINT).read_bytes())
    _refused(capsys, "calibrate", str(fake), match="no held-out validation split")
    _refused(capsys, "predict", "--run", str(fake), "--target-error", "0.1", *images, match="no held-out validation")


def test_a_strings_run_reports_and_rejects(tmp_path_factory, tmp_path, capsys):
    out = tmp_path / "strings"  # a copy of the session's tiny strings run (tiny_runs): this test writes into it
    shutil.copytree(shared_run(tmp_path_factory, "string"), out)
    assert cli.main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "string confidence (probability of the beam-search reading)" in text and "AURC" in text
    assert (out / "evaluate" / "reliability.png").is_file()
    img = tmp_path / "s.png"
    good = Image.new("L", (160, 48), 255)
    ImageDraw.Draw(good).text((6, 6), "2024", fill=0, font=ImageFont.load_default(size=30))
    good.save(img)
    assert cli.main(["predict", "--run", str(out), "--reject-below", "1.0", str(img)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("s.png") and line.endswith("?"), line
    _refused(capsys, "predict", "--run", str(out), "--target-error", "0.0001", str(img), match="lowest error")
    assert cli.main(["calibrate", str(out)]) == 0
    n = strings.read_config(out).val_strings
    assert f"{n} validation strings" in capsys.readouterr().out and runs.read_calibration(out).note


def test_predict_names_files_as_they_are_and_refuses_a_blocked_path_in_one_line(digit_run, images, tmp_path, capsys):
    """A file name with brackets is no rich markup (``photo [copy].png`` keeps its bracket, ``[red]x.png`` is
    not coloured away), and a ``--save-input`` folder that is a file, or that lies under one, is one line and
    exit code 2, not a traceback."""
    import shutil

    from hwr import cli

    named = [tmp_path / "photo [copy].png", tmp_path / "[red]x.png"]
    for src, dst in zip(images, named):
        shutil.copy(src, dst)
    capsys.readouterr()
    assert cli.main(["predict", "--run", str(digit_run), *map(str, named)]) == 0
    out = capsys.readouterr().out
    assert "photo [copy].png" in out and "[red]x.png" in out, out
    blocker = tmp_path / "taken.png"
    shutil.copy(images[0], blocker)
    _refused(capsys, "predict", "--run", str(digit_run), images[0], "--save-input", str(blocker), match="taken.png")
    under = str(blocker / "sub")
    _refused(capsys, "predict", "--run", str(digit_run), images[0], "--save-input", under, match="choose another path")
