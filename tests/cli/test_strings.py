"""The strings commands end to end: `hwr train --recipe strings`, `hwr evaluate`, `hwr predict` on real image
files of digit strings rendered in handwriting-style fonts (any size, colour, polarity, PNG and JPEG), reading
formats (`--length`, `--lengths`, `--pattern`) on a tiny trained run, `hwr data show mnist-strings`, and every bad
input getting one line and exit code 2."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import bad_here, hwr, png_header_only
from PIL import Image, ImageDraw, ImageFont
from tiny_runs import TWO_STROKES, shared_run

from hwr import checkpoint, metrics, models, pattern, random
from hwr.cli import UsageError
from hwr.cli.strings import _reading_text, reading_format
from hwr.config import to_dict
from hwr.errors import InputError
from hwr.tasks.digits.config import RunConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _fonts_module():
    """benchmarks/strings_fonts.py: the font-rendered string files (``render``) and the fonts looked for."""
    spec = importlib.util.spec_from_file_location("bench_strings_fonts", ROOT / "benchmarks" / "strings_fonts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FONTS = _fonts_module()
# A quick model: 200 eager steps of batch 32 of the strings recipe (6,400 strings in one epoch): no compile, about
# a minute on one core; about 9% test CER and 13% on the font files (batch 64: 8% and 10% in twice the time; 128
# steps of 32 fall to 27% and 36%, so 200 steps stay); the recipe's figures are in the README. Channels-last:
# ATen's NCHW CPU max-pool and convolutions make the eager step 1.35x slower (train 62 s against 83 s, one thread,
# Intel Xeon avx512f, 2026-12-07)
QUICK = ["--epochs", "1", "--batch-size", "32", "--limit-train", "6400", "--limit-test", "400", "--no-compile"]
QUICK += ["--memory-format", "channels_last"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "strings"
    p = hwr("train", "--recipe", "strings", *QUICK, "--out", str(out), fresh=True)  # the console script, end to end
    return out, p.stdout


def _cer(pairs: list[tuple[str, str]]) -> float:
    """Character error rate of (reading, truth) pairs, by hwr.metrics.edit_distance."""

    def pad(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(max(len(t) for t in texts), 1)
        rows = [[int(ch) for ch in t] + [-1] * (width - len(t)) for t in texts]
        return torch.tensor(rows, dtype=torch.int64), torch.tensor([len(t) for t in texts])

    got, want = pad([g for g, _ in pairs]), pad([w for _, w in pairs])
    return float(metrics.edit_distance(*got, *want).sum()) / float(want[1].sum())


def test_train_writes_run_folder(trained):
    out, stdout = trained
    assert {"config.json", "metrics.json", "checkpoint.safetensors", "strings.png"} <= {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "strings" and m["test"]["count"] == 400 and len(m["epochs"]) == 1
    assert [r["length"] for r in m["test"]["by_length"]] == list(range(1, 9))
    assert m["test"]["cer"] < 0.2, m["test"]
    assert "string accuracy" in stdout and "test CER" in stdout
    assert json.loads((out / "config.json").read_text())["task"] == "strings"
    assert m["execution"]["compile"] is False and m["execution"]["memory_format"] == "channels_last"  # as asked
    again = hwr("train", "--out", str(out), "--resume").stdout  # a finished run: nothing left to do
    assert "test CER" in again


def test_evaluate(trained):
    out, _ = trained
    p = hwr("evaluate", str(out))
    assert "CER" in p.stdout and "string accuracy" in p.stdout and "length" in p.stdout


def test_predict_font_strings(trained, tmp_path):
    fonts = FONTS.installed_fonts()
    if not fonts:
        pytest.skip("no handwriting-style font installed (benchmarks/strings_fonts.py names the Debian packages)")
    out, _ = trained
    files = FONTS.render(tmp_path, fonts)
    seen = tmp_path / "seen"
    p = hwr("predict", "--run", str(out), *[str(f) for f, _, _ in files], "--save-input", str(seen))
    lines = p.stdout.strip().splitlines()
    assert len(lines) == len(files), p.stdout
    pairs = []
    for line, (path, text, _) in zip(lines, files):
        name, reading, rest = line.split(None, 2)
        assert name == path.name
        conf = rest.strip("[]").split()
        assert len(conf) == (0 if reading == "(empty)" else len(reading))
        assert all(0.0 <= float(c) <= 1.0 for c in conf)
        pairs.append((reading.replace("(empty)", ""), text))
    assert _cer(pairs) < 0.35, pairs  # a one-epoch model on fonts it never saw; the recipe's is in the README
    assert len(list(seen.glob("*.png"))) == len(files)
    assert all(Image.open(f).size[1] == 32 for f in seen.glob("*.png"))


def test_data_show_strings(tmp_path):
    out = tmp_path / "grid.png"
    hwr("data", "show", "mnist-strings", "--n", "12", "--out", str(out))
    assert Image.open(out).size[0] > 300


def test_bad_inputs(trained, tmp_path, capsys):
    out, _ = trained
    (tmp_path / "notes.png").write_text("this is not an image")
    bad_here(capsys, "predict", "--run", str(out), str(tmp_path / "notes.png"), match="notes.png")
    Image.new("RGB", (400, 80), (250, 250, 250)).save(tmp_path / "blank.jpg")
    bad_here(capsys, "predict", "--run", str(out), str(tmp_path / "blank.jpg"), match="blank.jpg")
    (tmp_path / "huge.png").write_bytes(png_header_only(50_000, 50_000))
    bad_here(capsys, "predict", "--run", str(out), str(tmp_path / "huge.png"), match="huge.png")
    bad_here(capsys, "predict", "--run", str(out), str(tmp_path / "missing.png"), match="missing.png")
    good = Image.new("L", (160, 48), 255)
    ImageDraw.Draw(good).text((6, 6), "2024", fill=0, font=ImageFont.load_default(size=30))
    good.save(tmp_path / "good.png")
    p = hwr("predict", "--run", str(out), str(tmp_path / "good.png"), str(tmp_path / "notes.png"), check=False)
    assert p.returncode == 2 and p.stdout.startswith("good.png"), (p.stdout, p.stderr)  # the good file is read
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "notes.png" in p.stderr
    # a digit classifier's checkpoint under a strings run folder, and a digit run given as --from
    digits = tmp_path / "digits"
    digits.mkdir()
    (digits / "config.json").write_text(json.dumps(to_dict(RunConfig(model="rnn"))))
    checkpoint.save(
        digits / "checkpoint.safetensors",
        {"params": models.get("rnn").init(random.key(0)), "model_state": {}},
        {"model": "rnn"},
    )
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text((out / "config.json").read_text())
    (fake / "checkpoint.safetensors").write_bytes((digits / "checkpoint.safetensors").read_bytes())
    bad_here(capsys, "evaluate", str(fake), match="holds a digit classifier, not a strings model")
    bad_here(
        capsys,
        "predict",
        "--run",
        str(fake),
        str(tmp_path / "blank.jpg"),
        match="holds a digit classifier, not a strings model",
    )
    bad_here(
        capsys,
        "train",
        "--recipe",
        "strings",
        "--from",
        str(digits),
        *QUICK,
        "--out",
        str(tmp_path / "x"),
        match="none of its parameters fits",
    )
    bad_here(
        capsys,
        "train",
        "--recipe",
        "strings",
        "--from",
        str(tmp_path / "nothing"),
        "--out",
        str(tmp_path / "y"),
        match="not a run folder",
    )
    bad_here(capsys, "train", "--recipe", "strings", "--model", "cnn", "--out", str(tmp_path / "z"), match="crnn")
    bad_here(
        capsys, "train", "--recipe", "strings", "--augment", "standard", "--out", str(tmp_path / "w"), match="--augment"
    )
    bad_here(
        capsys, "train", "--recipe", "fast", "--from", str(out), "--out", str(tmp_path / "v"), match="hwr finetune"
    )
    bad_here(capsys, "train", "--recipe", "strings", "--out", str(out), match="already holds a run")


# ---------------------------------------------------------------------------------------------- reading formats


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny trained string and digit runs of ``tests/tiny_runs.py`` (seconds to make, shared by the session)."""
    return shared_run(tmp_path_factory, "string"), shared_run(tmp_path_factory, "digit")


def test_predict_reads_the_length_asked_for(tiny_runs, tmp_path):
    run, _ = tiny_runs
    image = tmp_path / "strokes.png"
    image.write_bytes(TWO_STROKES)
    p = hwr("predict", "--run", str(run), "--length", "3", str(image))
    name, reading, rest = p.stdout.strip().split(None, 2)
    assert name == "strokes.png" and len(reading) == 3 and reading.isdigit(), p.stdout
    assert len(rest.split("]")[0].strip("[").split()) == 3  # a confidence per character


def test_predict_reads_a_file_as_a_string(tiny_runs, tmp_path, capsys):
    """``hwr predict`` of a strings run reads each file as a string (``load_image(string=True)``: a rule under the
    writing goes, digits with room between them stay): the input it saves is that reading's, which the one-glyph
    reading of the same file is not."""
    from hwr import cli
    from hwr.data import digits
    from hwr.tasks import strings as sr

    run, _ = tiny_runs
    img = Image.new("L", (330, 90), 250)
    d = ImageDraw.Draw(img)
    for stroke in [[(22, 15), (62, 15), (36, 70)], [(110, 15), (110, 78)], [(170, 15), (170, 70)]]:
        d.line(stroke, fill=20, width=6)  # a 7, then two 1s with a digit's room between them
    d.line((0, 72, 330, 72), fill=20, width=3)  # the rule they are written on
    img.save(tmp_path / "ruled.png")
    assert (
        cli.main(["predict", "--run", str(run), str(tmp_path / "ruled.png"), "--save-input", str(tmp_path / "in")]) == 0
    )
    capsys.readouterr()
    saved = torch.from_numpy(np.array(Image.open(tmp_path / "in" / "ruled_strings.png")))
    spec = sr.read_config(run).data
    want = sr.normalise_string(digits.load_image(tmp_path / "ruled.png", string=True), spec)[0]
    assert torch.equal(saved, want)
    assert not torch.equal(saved, sr.normalise_string(digits.load_image(tmp_path / "ruled.png"), spec)[0])


def test_bad_reading_formats_are_one_line(tiny_runs, tmp_path, capsys):
    run, digit_run = tiny_runs
    image = tmp_path / "strokes.png"
    image.write_bytes(TWO_STROKES)
    bad_here(
        capsys, "predict", "--run", str(run), "--pattern", "((", str(image), match="bad pattern '((': '(' never closed"
    )
    bad_here(
        capsys, "predict", "--run", str(run), "--pattern", r"\d{5}-\d{4}", str(image), match="--recipe strings_forms"
    )
    bad_here(
        capsys,
        "predict",
        "--run",
        str(digit_run),
        "--length",
        "5",
        str(image),
        match="--length constrains how a string",
    )


def test_reading_format_flags():
    def args(**given):
        return argparse.Namespace(**{"length": None, "lengths": None, "pattern": None, **given})

    assert reading_format(args()) is None
    assert reading_format(args(length=5)) == ".{5}"
    assert reading_format(args(lengths="9, 5")) == ".{5}|.{9}"
    assert reading_format(args(pattern=r"\d{5}(-\d{4})?")) == r"\d{5}(-\d{4})?"
    with pytest.raises(UsageError, match="give one of --length, --lengths and --pattern"):
        reading_format(args(length=5, pattern="1"))
    with pytest.raises(UsageError, match="--lengths takes whole numbers"):
        reading_format(args(lengths="5,x"))
    with pytest.raises(InputError, match="lengths must be whole numbers from 1"):
        reading_format(args(length=0))
    with pytest.raises(InputError, match="nothing to repeat"):
        reading_format(args(pattern="+5"))


def test_reading_text_says_when_nothing_fits():
    fsa = pattern.automaton(".{40}", "0123456789-")
    assert _reading_text([], "0123456789-", fsa) == "(no reading of this image fits the pattern)"
    assert _reading_text([1, 10, 2], "0123456789-", fsa) == "1-2"
    assert _reading_text([], "0123456789", pattern.automaton(r"\d*", "0123456789")) == "(empty)"  # accepted
    assert _reading_text([], "0123456789", None) == "(empty)"
