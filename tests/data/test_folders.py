"""The user's own images (hwr.data.folders): folder and CSV layouts, class names, the reading path, the content-keyed
cache and its invalidation, drawn splits, bad input, --skip-bad, and a test-only folder scored by a trained run."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tiny import EAGER, TINY_CNN

from hwr import runs
from hwr.config import DataSettings
from hwr.data import catalog, digits, folders, sources
from hwr.errors import InputError
from hwr.tasks import digits as task
from hwr.tasks.digits.config import RunConfig


def _glyph(path, cls: int, *, size=40, photo=False, invert=False, seed=0):
    """A real image file of a drawn glyph: strokes of the class's shape (a count of bars), PNG or JPEG."""
    rng = np.random.default_rng(seed)
    bg, ink = (
        ((30, 30, 30), (240, 240, 240)) if invert else ((250, 245, 230) if photo else (255, 255, 255), (20, 30, 120))
    )
    img = Image.new("RGB", (size, size + 8), bg)
    d = ImageDraw.Draw(img)
    for i in range(cls % 4 + 1):
        x = 6 + 7 * i + int(rng.integers(0, 2))
        d.line([(x, 8), (x + cls % 3, size - 2)], fill=ink, width=3)
    if photo:
        a = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size + 8, size, 3))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path)
    return path


def _folder(root, counts, *, splits=("train",), classes=None):
    classes = classes or [str(c) for c in range(len(counts))]
    for split in splits:
        for c, n in zip(classes, counts):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                suffix = ".jpg" if i % 3 == 2 else ".png"
                _glyph(root / split / c / f"{i}{suffix}", classes.index(c), photo=i % 4 == 1, invert=i % 5 == 3, seed=i)
    return root


def test_folder_layout_classes_reading_path_and_drawn_splits(tmp_path):
    src = _folder(tmp_path / "mine", [12, 10, 6], classes=["cat", "ant", "bee"])
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert ds.classes == ("ant", "bee", "cat")  # sorted folder names, any names
    n = len(ds.train_labels) + len(ds.val_labels) + len(ds.test_labels)
    assert n == 28 and ds.train_images.dtype == torch.uint8 and ds.train_images.shape[1:] == (1, 28, 28)
    one = src / "train" / "cat" / "0.png"
    assert any(
        torch.equal(img, digits.mnist_style(digits.load_image(one))) for img in ds.train_images
    )  # predict's path
    prov = ds.provenance
    assert "drawn from train/" in prov["splits"]["val"]["how"] and "drawn" in prov["splits"]["test"]["how"]
    assert all(c >= 1 for c in prov["splits"]["test"]["counts"])  # stratified: every class in the test split
    again = sources.load(f"folder:{src}", tmp_path / "root")
    assert torch.equal(again.test_images, ds.test_images) and torch.equal(again.val_labels, ds.val_labels)  # keyed


def test_numeric_class_names_sort_as_numbers_and_given_splits_are_used(tmp_path):
    names = [str(c) for c in range(11)]
    src = _folder(tmp_path / "d", [2] * 11, splits=("train", "val", "test"), classes=names)
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert ds.classes == tuple(names) and ds.provenance["splits"]["val"]["how"] == "given"
    assert torch.bincount(ds.test_labels).tolist() == [2] * 11


def test_csv_with_and_without_split(tmp_path):
    img = tmp_path / "imgs"
    img.mkdir()
    rows = ["file,label,split"]
    for i in range(12):
        _glyph(img / f"{i}.png", i % 2, seed=i)
        rows.append(f"imgs/{i}.png,{'ab'[i % 2]},{'test' if i >= 8 else 'train'}")
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    ds = sources.load(f"csv:{tmp_path / 'l.csv'}", tmp_path / "root")
    assert ds.classes == ("a", "b") and len(ds.test_labels) == 4 and ds.provenance["splits"]["test"]["how"] == "given"
    (tmp_path / "n.csv").write_text("file,label\n" + "\n".join(f"imgs/{i}.png,{'ab'[i % 2]}" for i in range(12)))
    assert len(sources.load(f"csv:{tmp_path / 'n.csv'}", tmp_path / "root").test_labels) == 2  # drawn


def test_the_cache_decodes_nothing_twice_and_notices_edits(tmp_path, monkeypatch):
    src = _folder(tmp_path / "d", [4, 4], splits=("train", "test"))
    calls = []
    real = digits.load_image
    monkeypatch.setattr(digits, "load_image", lambda p: calls.append(p) or real(p))
    sources.load(f"folder:{src}", tmp_path / "root")
    assert len(calls) == 16
    calls.clear()
    sources.load(f"folder:{src}", tmp_path / "root")
    assert calls == []  # a second load decodes nothing
    _glyph(src / "train" / "0" / "0.png", 3, seed=99)  # edited
    _glyph(src / "train" / "1" / "new.png", 1, seed=98)  # added
    (src / "test" / "1" / "0.png").unlink()  # removed
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert sorted(p.name for p in calls) == ["0.png", "new.png"]
    assert len(ds.train_labels) + len(ds.val_labels) == 9 and len(ds.test_labels) == 7


def test_bad_input_names_the_problem_and_writes_nothing(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(catalog.DatasetSpecError, match="no such folder"):
        sources.load(f"folder:{tmp_path / 'nowhere'}", root)
    (tmp_path / "flat").mkdir()
    with pytest.raises(catalog.DatasetSpecError, match="no train/ or test/"):
        sources.load(f"folder:{tmp_path / 'flat'}", root)
    src = _folder(tmp_path / "d", [3, 3], splits=("train",))
    (src / "train" / "2").mkdir()
    with pytest.raises(catalog.DatasetSpecError, match="holds no image"):
        sources.load(f"folder:{src}", root)
    (src / "train" / "2").rmdir()
    (src / "test" / "9").mkdir(parents=True)
    _glyph(src / "test" / "9" / "a.png", 1)
    with pytest.raises(catalog.DatasetSpecError, match=r"\['9'\] in test/ but not in train/"):
        sources.load(f"folder:{src}", root)
    (src / "test" / "9" / "a.png").unlink()
    (src / "test" / "9").rmdir()
    (src / "test").rmdir()
    (src / "train" / "0" / "notes.txt").write_text("not an image")  # no image suffix: ignored
    (src / "train" / "0" / "broken.png").write_text("not an image")
    with pytest.raises(InputError, match=r"broken.png.*--skip-bad"):
        sources.load(f"folder:{src}", root)
    Image.new("RGB", (30, 30), (250, 250, 250)).save(src / "train" / "1" / "blank.png")
    assert not (root / "folders").exists()  # nothing written when loading fails
    ds = sources.load(f"folder:{src}", DataSettings(root, skip_bad=True))
    assert len(ds.provenance["skipped"]) == 2 and {p.split("/")[-1] for p, _ in ds.provenance["skipped"]} == {
        "broken.png",
        "blank.png",
    }


def test_too_few_images_to_draw_a_split_names_the_class_and_the_fix(tmp_path):
    src = _folder(tmp_path / "d", [5, 1], splits=("train",))
    with pytest.raises(catalog.DatasetSpecError, match=r"\['1'\] have fewer than 2 images.*add a test/ folder"):
        sources.load(f"folder:{src}", tmp_path / "root")
    # a long tail of 3 images per tail class loads when test/ is given (1 of the 3 is drawn to val)
    src = _folder(tmp_path / "lt", [20, 3], splits=("train",))
    _folder(src, [2, 2], splits=("test",))
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert torch.bincount(ds.val_labels).tolist() == [2, 1] and torch.bincount(ds.train_labels).tolist() == [18, 2]


def test_a_test_only_folder_is_scored_by_a_trained_run_matched_by_class_name(tmp_path):
    run = tmp_path / "run"
    cfg = RunConfig(model_config=TINY_CNN, dataset="optdigits", epochs=1, batch_size=32, limit_train=128, limit_test=64)
    task.run(cfg, run, execution=EAGER, write_figures=False)
    src = _folder(tmp_path / "others", [3, 3], splits=("test",), classes=["7", "3"])
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert len(ds.train_labels) == 0 and ds.classes == ("3", "7")
    _, y = task.training.on_run_classes(ds, [str(c) for c in range(10)], run)
    assert sorted(set(y.tolist())) == [3, 7]  # the run's indices, not the folder's
    r = task.evaluate_run(run, f"folder:{src}", data=DataSettings(tmp_path / "root"))
    assert r["count"] == 6 and len(r["per_class"]["f1"]) == 10
    bad = _folder(tmp_path / "letters", [2], splits=("test",), classes=["x"])
    with pytest.raises(runs.RunError, match=r"class\(es\) \['x'\] it does not know"):
        task.evaluate_run(run, f"folder:{bad}", data=DataSettings(tmp_path / "root"))


def test_names_are_recognised_everywhere_a_data_set_is_named():
    assert (
        folders.is_user_data("folder:/x") and folders.is_user_data("csv:/x.csv") and not folders.is_user_data("mnist")
    )
    assert catalog.check_name("folder:/any/path") == "folder"
    with pytest.raises(catalog.DatasetSpecError, match="names no path"):
        catalog.check_name("folder:")
    with pytest.raises(catalog.UnknownDatasetError, match="folder:PATH / csv:FILE"):
        catalog.check_name("mnits")
