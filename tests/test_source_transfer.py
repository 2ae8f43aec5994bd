"""benchmarks/source_transfer.py: every source variant is pretrained, scored zero-shot on held-out optdigits and by
the study's start fine-tuned from it, all on validation splits (no run reads a test split); a bad spec exits 2."""

import json
from pathlib import Path

from cli_run import python

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "source_transfer.py"


def test_each_source_is_scored_zero_shot_and_by_the_start_on_validation_only(tmp_path):
    out, runs = tmp_path / "t.json", tmp_path / "r"
    smoke = ["--limit-train", "256", "--no-compile", "--draws", "0", "1", "--seeds", "0", "--finetune-epochs", "1"]
    lowres = ["--pretrain-data", "mnist:lowres=0.01"]  # a share of MNIST rescanned coarsely (hwr.data.lowres)
    args = [*smoke, *lowres, "--augment", "none", "rotation=5", "--out", str(runs), "--json", str(out)]
    done = python(str(SCRIPT), *args, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["pretrain_data"], r["augment"]) for r in rows] == [
        ("mnist:lowres=0.01", a) for a in ("none", "rotation=5")
    ]
    for r in rows:
        assert len(r["start_val_macro_f1"]) == 2 and 0 <= r["zero_shot_macro_f1"] <= 1
        assert r["start_mean"] == sum(r["start_val_macro_f1"]) / 2
    diff = [a - b for a, b in zip(rows[1]["start_val_macro_f1"], rows[0]["start_val_macro_f1"], strict=True)]
    paired = rows[1]["start_minus_first"]  # paired by draw and seed with the first source
    assert "start_minus_first" not in rows[0] and paired["n"] == 2
    assert abs(paired["mean"] - sum(diff) / 2) < 1e-12 and paired["low"] <= paired["mean"] <= paired["high"]
    folders = sorted(p.name for p in runs.iterdir())
    lr = "source-mnist_lowres_0.01"
    assert folders == [
        f"{lr}-none-e3",
        f"{lr}-rotation5-e3",
        f"start-{lr}-none-e3-draw0-seed0",
        f"start-{lr}-none-e3-draw1-seed0",
        f"start-{lr}-rotation5-e3-draw0-seed0",
        f"start-{lr}-rotation5-e3-draw1-seed0",
    ]
    source = json.loads((runs / f"{lr}-rotation5-e3" / "config.json").read_text())
    assert source["augment"]["rotation"] == 5.0 and source["recipe"] == "fast"
    assert source["dataset"] == "mnist:lowres=0.01"
    for name in folders:  # neither the sources nor the fine-tunes read a test split
        assert json.loads((runs / name / "metrics.json").read_text())["test"] is None
    start = json.loads((runs / folders[3] / "config.json").read_text())
    assert start["dataset"].startswith("optdigits-lt") and "draw=1" in start["dataset"]
    assert start["finetune"]["source"].endswith(f"{lr}-none-e3")
    bad = python(str(SCRIPT), "--augment", "twirl=3", cwd=ROOT)
    assert bad.returncode == 2 and "unknown augmentation key 'twirl'" in bad.stderr
    bad = python(
        str(SCRIPT),
        "--pretrain-data",
        "fashion-mnist:lowres=0.5",
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "'lowres=0.5' is not a parameter of fashion-mnist" in bad.stderr
