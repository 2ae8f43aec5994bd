"""benchmarks/tail_size.py: the study's start on optdigits-lt profiles of other imbalance ratios, each run's
validation and test figures and its most frequent error; bad arguments exit 2."""

import importlib.util
import json
import sys
from pathlib import Path

from cli_run import python

from hwr.config import DataSettings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "tail_size.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_tail_size", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_top_confusion_names_the_most_frequent_error_first_in_row_order():
    top = _module().top_confusion
    assert top([[5, 0, 0], [0, 5, 0], [0, 0, 5]], ("a", "b", "c")) == ("-", "-", 0)  # the diagonal is no error
    assert top([[9, 1, 3], [0, 9, 0], [3, 2, 9]], ("a", "b", "c")) == ("a", "c", 3)  # a tie: the first row wins
    assert top([[9, 1, 0], [0, 9, 4], [3, 2, 9]], ("a", "b", "c")) == ("b", "c", 4)


def test_each_ratio_is_a_profile_of_the_same_head_and_reports_both_splits(tmp_path):
    out, runs = tmp_path / "t.json", tmp_path / "r"
    smoke = ["--limit-train", "256", "--no-compile", "--finetune-epochs", "1", "--draws", "0", "1", "--seeds", "0"]
    ratios = ["--ratios", "100", "--self-train", "0", "0.5"]
    done = python(str(SCRIPT), *smoke, *ratios, "--out", str(runs), "--json", str(out), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["ratio"], r["self_train"]) for r in rows] == [(100, 0), (100, 0.5)]
    assert rows[0]["train_counts"] == [85, 50, 30, 18, 10, 6, 3, 2, 1, 1]  # the study's profile: a one-image tail
    counts, classes = _module()._profile(20, DataSettings(tmp_path / "data"))  # another ratio: a tail of 4
    assert counts[0] == 85 and counts[-1] == 4 and classes == tuple("0123456789")
    first, selfie = rows  # the self-trained row is paired with the first row of its ratio, run by run
    assert "vs_first" not in first and selfie["vs_first"]["test"]["n"] == 2
    diff = [a["test_macro_f1"] - b["test_macro_f1"] for a, b in zip(selfie["runs"], first["runs"], strict=True)]
    assert abs(selfie["vs_first"]["test"]["mean"] - sum(diff) / 2) < 1e-12
    student = json.loads((runs / "start-ratio100-self0.5-draw1-seed0" / "metrics.json").read_text())
    assert student["self_training"]["unlabeled"] == 661
    assert (runs / "start-ratio100-self0.5-draw1-seed0" / "teacher").is_dir()
    for r in rows:
        assert [(x["draw"], x["seed"]) for x in r["runs"]] == [(0, 0), (1, 0)]
        assert r["test_mean"] == sum(x["test_macro_f1"] for x in r["runs"]) / 2
        assert r["test_lowest"] == min(x["test_macro_f1"] for x in r["runs"])
        for x in r["runs"]:
            assert sum(map(sum, x["confusion"])) == 530  # the balanced test split, 53 images a class
            true, pred = x["top_error"].split(" (")[0].split(" read as ")
            off = [[n if i != j else 0 for j, n in enumerate(row)] for i, row in enumerate(x["confusion"])]
            assert off[int(true)][int(pred)] == max(map(max, off)) > 0
    start = json.loads((runs / "start-ratio100-draw1-seed0" / "config.json").read_text())
    assert start["dataset"].startswith("optdigits-lt:ratio=100") and "draw=1" in start["dataset"]
    assert start["self_train"]["threshold"] == 0  # the first row: from the labelled images alone
    assert start["finetune"]["source"] == str(runs / "source")
    assert json.loads((runs / "source" / "metrics.json").read_text())["test"] is None  # the source reads no test split
    bad = python(str(SCRIPT), "--self-train", "1", cwd=ROOT)
    assert bad.returncode == 2 and "[0, 1)" in bad.stderr
    bad = python(str(SCRIPT), "--ratios", "0", cwd=ROOT)
    assert bad.returncode == 2 and "at least 1" in bad.stderr
    bad = python(str(SCRIPT), "--source", str(tmp_path / "nowhere"), cwd=ROOT)
    assert bad.returncode == 2 and "not a run folder" in bad.stderr
