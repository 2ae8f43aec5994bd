"""`hwr export` on a tiny digit run, in this process: the program and its metadata written and checked, the
format taken from --out's suffix, and every bad input (not a run, an unfinished run, an unknown format, an --out that
cannot be written) one line and exit code 2 with nothing written."""

import json
from pathlib import Path

import pytest
import torch
from cli_run import bad_here, here
from tiny import EAGER, run_config

from hwr.tasks import digits


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    digits.run(run_config(), out, execution=EAGER)
    return out


def test_export(run, tmp_path, capsys):
    """The format from --out's suffix (torch here: the library's tests cover ONNX), checked, with its JSON."""
    out = tmp_path / "model.pt2"
    code, stdout, _ = here(capsys, "export", str(run), "--out", str(out))
    assert code == 0 and f"wrote {out} (torch" in stdout and "(N, 1, 28, 28)" in stdout and "(N, 10)" in stdout
    diff = float(stdout.split("check images: ")[1].split()[0])
    assert 0 <= diff < 1e-4
    info = json.loads((tmp_path / "model.pt2.json").read_text())
    assert info["task"] == "digits" and info["format"] == "torch" and info["run"] == str(run)
    program = torch.export.load(out).module()
    assert program(torch.zeros(3, 1, 28, 28, dtype=torch.uint8)).shape == (3, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2", "model.pt2.json"]


def test_bad_input_is_one_line(run, tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    bad_here(capsys, "export", str(tmp_path), "--out", out, match="not a run folder")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((run / "config.json").read_text())
    bad_here(capsys, "export", str(unfinished), "--format", "torch", "--out", out, match="unfinished run")
    bad_here(capsys, "export", str(run), "--format", "tflite", "--out", out, match="unknown export format 'tflite'")
    bad_here(capsys, "export", str(run), "--out", str(tmp_path / "m.bin"), match="say --format onnx or --format torch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's /sys, which nobody (not even root) may write")
def test_an_unwritable_out_is_one_line(run, capsys):
    bad_here(
        capsys,
        "export",
        str(run),
        "--format",
        "onnx",
        "--out",
        "/sys/hwr-test/m.onnx",
        match="cannot write /sys/hwr-test",
    )
