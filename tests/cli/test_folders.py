"""`--dataset folder:PATH` at the command line: `hwr data info` prints every split's per-class counts and how it
was obtained, `hwr finetune` and `hwr evaluate` run on the folder, and bad folders are one line, exit 2, nothing
written."""

import json

from cli_run import bad, hwr
from PIL import Image, ImageDraw


def _write(root, split, counts):
    for c, n in enumerate(counts):
        (root / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = Image.new("L", (36, 44), 255)
            ImageDraw.Draw(img).line([(8 + 3 * c, 6), (12 + 2 * c + i % 3, 38)], fill=0, width=3 + i % 2)
            img.save(root / split / str(c) / f"{i}.png")


def test_info_finetune_and_evaluate_on_a_folder(tmp_path):
    src = tmp_path / "mine"
    _write(src, "train", [20, 12, 6, 3])
    _write(src, "test", [4, 4, 4, 4])
    data = ["--data-root", str(tmp_path / "data")]
    info = hwr("data", "info", f"folder:{src}", "--root", str(tmp_path / "data"), env={"COLUMNS": "300"}).stdout
    assert "classes" in info and "val: drawn from train/" in info and "test: given" in info
    source = tmp_path / "source"
    hwr(
        "train",
        "--dataset",
        "optdigits",
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--no-compile",
        "--out",
        str(source),
        *data,
    )
    out = tmp_path / "ft"
    p = hwr(
        "finetune",
        "--from",
        str(source),
        "--dataset",
        f"folder:{src}",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--no-compile",
        "--out",
        str(out),
        *data,
    )
    assert "initialised afresh (not from the source): head.kernel, head.bias" in p.stdout  # 4 classes, not 10
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == ["0", "1", "2", "3"] and m["test"]["count"] == 16
    assert sorted(m["reinitialised"]) == ["head.bias", "head.kernel"]
    assert "test (16 images)" in hwr("evaluate", str(out), "--dataset", f"folder:{src}", *data).stdout


def test_bad_folders_are_one_line_and_write_nothing(tmp_path):
    root = tmp_path / "data"
    bad("data", "info", f"folder:{tmp_path / 'missing'}", "--root", str(root), match="no such folder")
    empty = tmp_path / "empty"
    (empty / "train" / "0").mkdir(parents=True)
    bad("data", "info", f"folder:{empty}", "--root", str(root), match="holds no image")
    broken = tmp_path / "broken"
    _write(broken, "train", [4, 4])
    (broken / "train" / "1" / "x.png").write_text("not an image")
    bad("data", "info", f"folder:{broken}", "--root", str(root), match=("x.png", "--skip-bad"))
    assert not root.exists()
    assert "skipped 1 unreadable" in hwr("data", "info", f"folder:{broken}", "--root", str(root), "--skip-bad").stdout
