"""``--dataset folder:PATH`` / ``csv:FILE`` at the command line: ``hwr data info`` prints every split's per-class
counts and how it was obtained, ``hwr train`` / ``finetune`` train on a folder, ``hwr evaluate`` scores a run on a
test-only folder of some of its classes, and every bad folder is one line, exit 2, nothing written under the data
root or ``--out``; ``--skip-bad`` skips (and counts) unreadable or blank images. Mostly in-process (``hwr.cli.main``)
to stay quick; one subprocess checks the console script's exit code end to end."""

import json

import pytest
from cli_run import bad
from PIL import Image, ImageDraw

from hwr import cli, errors, tune


def write(root, split, counts, classes=None):
    """``root/split/<class>/`` with ``counts[i]`` drawn images (PNG, a JPEG every third) of ``classes[i]``."""
    classes = classes or [str(c) for c in range(len(counts))]
    for c, (name, n) in enumerate(zip(classes, counts)):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = Image.new("L", (36 + 4 * (i % 3), 44), 255)
            d = ImageDraw.Draw(img)
            d.line([(8 + 3 * c, 6), (12 + 2 * c + i % 3, 38)], fill=0, width=3 + i % 2)
            d.ellipse([20, 10 + i % 9, 24 + c, 14 + i % 9], fill=0)
            img.save(root / split / name / f"{i}.{'jpg' if i % 3 == 2 else 'png'}")
    return root


def hwr_in(capsys, *args: str) -> tuple[int, str, str]:
    """``hwr ARGS`` in this process: ``(exit code, stdout, stderr)``."""
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def cells(out: str) -> dict[str, list[str]]:
    """The body rows of the rich tables in ``out`` by their first cell."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") > 2]
    return {r[0]: r[1:] for r in rows}


def refused(capsys, *args: str, match: str) -> None:
    code, _, err = hwr_in(capsys, *args)
    assert code == 2 and err.startswith("hwr: error: ") and len(err.strip().splitlines()) == 1, err
    assert match in err, err


def test_paths_and_class_names_print_as_typed(tmp_path, capsys):
    """A folder or class name is never read as rich markup or an emoji code: ``d [/x]`` was a MarkupError (an
    internal error), ``[final]`` vanished and ``:cat:`` became a cat."""
    src = write(tmp_path / "d [/x] :cat:", "train", [4, 4], classes=["[final]", ":ok:"])
    write(src, "test", [2, 2], classes=["[final]", ":ok:"])
    code, out, err = hwr_in(capsys, "data", "info", f"folder:{src}", "--root", str(tmp_path / "data"))
    assert code == 0, err
    assert f"folder:{src}: 2 classes" in out and "[final]" in cells(out) and ":ok:" in cells(out)
    assert f"test: given: {src}/test/" in out


def test_info_train_finetune_and_evaluate_on_folders(tmp_path, capsys):
    data = ["--data-root", str(tmp_path / "data")]
    fast = ["--epochs", "1", "--batch-size", "8", "--no-compile", "--augment", "none", *data]
    src = write(tmp_path / "mine", "train", [10, 8, 5, 3])
    write(src, "test", [2, 2, 2, 2])
    code, out, _ = hwr_in(capsys, "data", "info", f"folder:{src}", "--root", str(tmp_path / "data"))
    assert code == 0 and cells(out)["total"][1:] == ["22", "4", "8"]  # train, val (drawn), test
    assert "val: drawn from the training images: 10% of each class" in out and f"test: given: {src}/test/" in out
    assert "train: given" in out and "less the drawn splits" in out
    assert cells(out)["3"] == ["3", "2", "1", "2"]  # class 3: label 3, 2 train, 1 val (drawn), 2 test

    run = tmp_path / "run"
    code, out, _ = hwr_in(capsys, "train", "--dataset", f"folder:{src}", "--out", str(run), *fast)
    assert code == 0, out
    assert json.loads((run / "metrics.json").read_text())["classes"] == ["0", "1", "2", "3"]

    other = write(tmp_path / "abc", "train", [8, 8, 8], ["a", "b", "c"])
    ft = tmp_path / "ft"
    code, out, _ = hwr_in(
        capsys, "finetune", "--from", str(run), "--dataset", f"folder:{other}", "--out", str(ft), *fast
    )
    assert code == 0 and "initialised afresh (not from the source): head.kernel, head.bias" in out  # 3 classes, not 4
    assert json.loads((ft / "metrics.json").read_text())["classes"] == ["a", "b", "c"]

    only = write(tmp_path / "others", "test", [3, 2], ["3", "1"])  # other writers, two of the run's classes
    code, out, _ = hwr_in(capsys, "evaluate", str(run), "--dataset", f"folder:{only}", *data)
    assert code == 0 and "test (5 images)" in out
    rows = cells(out)
    assert [rows[c][-1] for c in "0123"] == ["0", "2", "0", "3"]  # support under the run's classes
    both = write(write(tmp_path / "both", "test", [3, 2], ["3", "1"]), "train", [1, 4], ["3", "1"])
    code, out, _ = hwr_in(capsys, "evaluate", str(run), "--dataset", f"folder:{both}", *data)  # train/ unread
    assert code == 0 and "test (5 images)" in out and "test: given" not in out and "drawn" not in out
    mine = write(tmp_path / "trainonly", "train", [5, 5], ["3", "1"])  # no test/: a drawn share is scored, and said
    code, out, _ = hwr_in(capsys, "evaluate", str(run), "--dataset", f"folder:{mine}", *data)
    assert code == 0 and "test (2 images)" in out and "test: drawn from the training images: 20%" in out
    assert "a test/ folder, or CSV rows of split test, names the images to score instead" in out
    letters = write(tmp_path / "letters", "test", [1, 1], ["3", "x"])
    refused(capsys, "evaluate", str(run), "--dataset", f"folder:{letters}", *data, match="class 'x' is not one of")
    refused(capsys, "train", "--dataset", f"folder:{only}", "--out", str(tmp_path / "no"), *fast, match="no training")
    assert not (tmp_path / "no").exists()


@pytest.fixture
def broken(tmp_path):
    """A folder with one image that does not decode and one blank image among good ones."""
    src = write(tmp_path / "broken", "train", [6, 6])
    (src / "train" / "1" / "x.png").write_text("not an image")
    Image.new("RGB", (40, 40), (230, 220, 200)).save(src / "train" / "0" / "blank.jpg")
    return src


def test_bad_folders_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, broken):
    root = tmp_path / "data"
    out = tmp_path / "out"
    missing = tmp_path / "missing"
    empty = tmp_path / "empty"
    (empty / "train" / "0").mkdir(parents=True)
    (empty / "train" / "0" / "notes.txt").write_text("not an image: ignored, so the class folder is empty")
    extra = write(tmp_path / "extra", "train", [3, 3])
    write(extra, "test", [1, 1, 1], ["0", "1", "2"])
    no_train = write(tmp_path / "val_only", "val", [2, 2])
    few = write(tmp_path / "few", "train", [5, 1])
    cases = [
        (f"folder:{missing}", "is not a folder"),
        (f"csv:{missing}.csv", "does not exist or is not a CSV file"),
        (f"folder:{no_train}", "no train/ folder"),
        (f"folder:{empty}", "holds no image"),
        (f"folder:{extra}", "class '2' is in test/ but not in train/"),
        (f"folder:{few}", "class '1' has 1 image in train/: too few"),
        (f"folder:{broken}", "train/0/blank.jpg: no ink found"),
    ]
    for name, match in cases:
        refused(capsys, "data", "info", name, "--root", str(root), match=match)
        refused(capsys, "train", "--dataset", name, "--out", str(out), "--data-root", str(root), match=match)
    (broken / "train" / "0" / "blank.jpg").unlink()
    refused(
        capsys,
        "data",
        "show",
        f"folder:{broken}",
        "--out",
        str(out / "a.png"),
        "--root",
        str(root),
        match="train/1/x.png: not an image file",
    )
    refused(capsys, "finetune", "--from", str(out), "--dataset", "folder:", "--out", str(out), match="names no path")
    assert not root.exists() and not out.exists()
    # the console script in a fresh interpreter
    bad("data", "info", f"folder:{missing}", "--root", str(root), match="is not a folder", fresh=True)


def test_skip_bad_skips_and_counts(tmp_path, capsys, broken):
    root = ["--root", str(tmp_path / "data")]
    code, out, _ = hwr_in(capsys, "data", "info", f"folder:{broken}", *root, "--skip-bad")
    assert code == 0 and "skipped 2 unreadable or blank image(s)" in out
    assert "train/0/blank.jpg" in out and "train/1/x.png" in out and "total" in out
    code, out, _ = hwr_in(
        capsys, "data", "show", f"folder:{broken}", "--out", str(tmp_path / "s.png"), *root, "--skip-bad"
    )
    assert code == 0 and (tmp_path / "s.png").is_file() and "skipped 2" in out


def test_a_relative_path_is_stored_absolute_so_the_run_reads_the_same_images_from_anywhere(
    tmp_path, capsys, monkeypatch
):
    """``--dataset folder:mine`` typed in one folder is stored resolved in config.json (train, finetune, a study's
    record): ``hwr evaluate RUN`` and ``--resume`` from another folder read those images, not another ``mine``."""
    data = ["--data-root", str(tmp_path / "data")]
    fast = ["--epochs", "1", "--batch-size", "8", "--no-compile", "--augment", "none", *data]
    mine = (tmp_path / "mine").resolve()
    write(write(mine, "train", [6, 6]), "test", [2, 2])
    write(tmp_path / "away" / "mine", "test", [1, 1], ["x", "y"])  # another folder of that name
    monkeypatch.chdir(tmp_path)
    code, out, _ = hwr_in(capsys, "train", "--dataset", "folder:mine", "--out", "run", *fast)
    assert code == 0, out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == f"folder:{mine}"
    code, out, _ = hwr_in(capsys, "finetune", "--from", "run", "--dataset", "folder:./mine/", "--out", "ft", *fast)
    ft = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert (
        code == 0
        and ft["dataset"] == f"folder:{mine}"
        and ft["finetune"]["source"] == str((tmp_path / "run").resolve())
    )

    monkeypatch.chdir(tmp_path / "away")
    code, out, _ = hwr_in(capsys, "evaluate", str(tmp_path / "run"), *data)
    assert code == 0 and "test (4 images)" in out, out
    code, out, _ = hwr_in(capsys, "train", "--resume", "--out", str(tmp_path / "run"), "--no-compile", *data)
    assert code == 0, out

    seen = {}

    def optimize(spec, **kw):  # the study's record, without running one
        seen.update(kw)
        raise errors.InputError("stopped here")

    monkeypatch.setattr(tune, "optimize", optimize)
    monkeypatch.setattr(tune, "pretrain", lambda *a, **kw: None)
    root = ["--root", str(tmp_path / "studies")]
    refused(capsys, "study", "run", "mnist_architecture", "--dataset", "folder:mine", *root, match="stopped here")
    assert seen["dataset"] == f"folder:{(tmp_path / 'away' / 'mine').resolve()}" and seen["name"].endswith("mine")
