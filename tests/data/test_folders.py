"""The user's own images (hwr.data.folders): folder and CSV layouts, class names and their order, predict's reading
path, the content-keyed cache and its invalidation, drawn splits (stratified, keyed, disjoint), too few images, bad
input (one line, nothing written), --skip-bad, and a test-only folder scored by a trained run by class name."""

import os
import unicodedata

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tiny import EAGER, TINY_CNN

from hwr import errors
from hwr.config import DataSettings
from hwr.data import catalog, digits, folders, sources, splits
from hwr.errors import InputError
from hwr.optim import OptimConfig
from hwr.tasks import digits as task
from hwr.tasks.digits.config import RunConfig


def glyph(path, cls: int, k: int = 0, *, style: str = "plain"):
    """A real image file of a glyph unique to ``(cls, k)``: ``cls % 4 + 1`` strokes jittered by ``k``. Styles:
    ``plain`` (grey, dark on white), ``rgb`` (blue ink on yellow), ``inverted`` (light on black), ``photo`` (tinted
    paper, noise), each at its own size; the suffix picks PNG or JPEG."""
    rng = np.random.default_rng(1000 * cls + k)
    w, h = {"plain": (40, 48), "rgb": (64, 80), "inverted": (28, 28), "photo": (120, 100)}[style]
    ground, ink = {
        "plain": (255, 20),
        "rgb": ((240, 220, 120), (20, 40, 160)),
        "inverted": (0, 240),
        "photo": ((236, 228, 205), (40, 35, 60)),
    }[style]
    img = Image.new("L" if style in ("plain", "inverted") else "RGB", (w, h), ground)
    d = ImageDraw.Draw(img)
    for i in range(cls % 4 + 1):
        x = w * (0.2 + 0.15 * i) + rng.uniform(-2, 2)
        d.line([(x, h * 0.15), (x + rng.uniform(-4, 4) + cls % 3, h * 0.85)], fill=ink, width=max(2, w // 14))
    d.ellipse([w * 0.55, h * 0.2, w * 0.55 + 3 + k % 7, h * 0.2 + 3 + k % 5], fill=ink)  # makes each k unique
    if style == "photo":
        a = np.asarray(img, dtype=np.float32) + rng.normal(0, 5, (h, w, 3))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=92) if path.suffix == ".jpg" else img.save(path)
    return path


STYLES = ("plain", "rgb", "inverted", "photo")


def folder(root, counts, split="train", classes=None, offset=0):
    """``root/split/<class>/`` with ``counts[i]`` images of class ``classes[i]`` in every style, PNG and JPEG."""
    classes = classes or [str(c) for c in range(len(counts))]
    for c, n in zip(classes, counts):
        for k in range(n):
            j = offset + k + (100 if split == "val" else 200 if split == "test" else 0)
            glyph(root / split / c / f"{k}.{'jpg' if k % 3 == 2 else 'png'}", classes.index(c), j, style=STYLES[k % 4])
    return root


def rows(x):
    return {bytes(r.flatten().tolist()) for r in x}


def test_layout_any_class_names_and_predicts_reading_path(tmp_path):
    src = folder(tmp_path / "mine", [12, 10, 6], classes=["cat", "ant", "bee"])
    (src / "train" / "cat" / "notes.txt").write_text("no image suffix: ignored")
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert ds.classes == ("ant", "bee", "cat") and ds.name == f"folder:{src}"
    for x in (ds.train_images, ds.val_images, ds.test_images):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
    assert len(ds.train_labels) + len(ds.val_labels) + len(ds.test_labels) == 28
    by_class = {c: [] for c in ds.classes}
    for x, y in ((ds.train_images, ds.train_labels), (ds.val_images, ds.val_labels), (ds.test_images, ds.test_labels)):
        for img, label in zip(x, y.tolist()):
            by_class[ds.classes[label]].append(bytes(img.flatten().tolist()))
    for style_k in range(4):  # every style (grey, RGB, inverted, photo; PNG, JPEG) read exactly as hwr predict reads it
        f = next((src / "train" / "cat").glob(f"{style_k}.*"))
        assert bytes(digits.mnist_style(digits.load_image(f)).flatten().tolist()) in by_class["cat"]
    p = ds.provenance
    assert p["kind"] == "folder" and p["classes"] == ["ant", "bee", "cat"] and p["skipped"] == []
    assert p["splits"]["train"]["counts"] == torch.bincount(ds.train_labels, minlength=3).tolist()
    assert [p["splits"][s]["origin"] for s in folders.SPLITS] == ["given", "drawn", "drawn"]


def test_integer_class_names_sort_as_numbers_and_given_splits_are_used(tmp_path):
    names = [str(c) for c in (10, 2, 0, 1, 9)]
    src = folder(tmp_path / "d", [1] * 5, classes=names)
    folder(src, [1] * 5, "val", names)
    folder(src, [2] * 5, "test", names)
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert ds.classes == ("0", "1", "2", "9", "10")  # '10' after '9'; 1 training image each is enough
    assert ds.train_labels.tolist() == [0, 1, 2, 3, 4] and torch.bincount(ds.test_labels).tolist() == [2] * 5
    assert {s["origin"] for s in ds.provenance["splits"].values()} == {"given"}
    assert ds.provenance["splits"]["val"]["about"] == f"given: {src}/val/"


def test_csv_with_and_without_a_split_column(tmp_path):
    for i in range(12):
        glyph(tmp_path / "imgs" / f"{i}.png", i % 2, i)
    lines = [f"imgs/{i}.png,{'ab'[i % 2]},{'Test' if i >= 10 else 'test' if i >= 8 else 'train'}" for i in range(12)]
    (tmp_path / "s.csv").write_text("file,label,split\n" + "\n".join(lines) + "\n")
    ds = sources.load(f"csv:{tmp_path / 's.csv'}", tmp_path / "root")
    assert ds.classes == ("a", "b") and ds.test_labels.tolist() == [0, 1, 0, 1]  # "Test" is test
    assert ds.provenance["kind"] == "csv" and ds.provenance["splits"]["test"]["origin"] == "given"
    assert torch.equal(ds.test_images[0], digits.mnist_style(digits.load_image(tmp_path / "imgs" / "8.png")))
    (tmp_path / "n.csv").write_text("label,file\n" + "\n".join(f"{10 - i % 2},imgs/{i}.png" for i in range(12)))
    ds = sources.load(f"csv:{tmp_path / 'n.csv'}", tmp_path / "root")  # no split column: all train, the rest drawn
    assert ds.classes == ("9", "10") and len(ds.test_labels) == 2 and len(ds.val_labels) == 2
    assert ds.provenance["splits"]["test"]["origin"] == "drawn"
    bad_csv(
        tmp_path, "imgs/0.png,a\nimgs/1.png,b\n", catalog.DatasetSpecError, "header row naming the columns file,label"
    )
    bad_csv(
        tmp_path, "file,label\nimgs/0.png,a\nimgs/nope.png,b\n", catalog.DataUnavailableError, r"line 3: .*nope.png"
    )
    bad_csv(
        tmp_path, "file,label\nimgs/0.png,a\nimgs,b\n", catalog.DatasetSpecError, r"line 3: .*imgs is a folder; list"
    )


def bad_csv(tmp_path, content: str | bytes, error: type[Exception], match: str) -> None:
    """A CSV of ``content`` (text, or bytes in another encoding) is refused with ``error`` matching ``match``."""
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(error, match=match):
        sources.load(f"csv:{path}", tmp_path / "root")


def test_a_spreadsheets_csv_with_semicolons_or_tabs_loads_and_other_encodings_are_named(tmp_path):
    """``file;label`` (a spreadsheet where the comma is the decimal mark) and tab-separated rows load as the comma
    CSV does; a Latin-1 file asks for UTF-8; a header without ``file`` shows the row it read."""
    for i in range(12):
        glyph(tmp_path / "imgs" / f"é{i}.png", i % 2, i)
    rows_ = [(f"imgs/é{i}.png", "ab"[i % 2], "test" if i >= 8 else "train") for i in range(12)]
    want = None
    for name, sep in (("c.csv", ","), ("s.csv", ";"), ("t.tsv", "\t")):
        (tmp_path / name).write_text(f"file{sep}label{sep}split\n" + "\n".join(sep.join(r) for r in rows_))
        ds = sources.load(f"csv:{tmp_path / name}", tmp_path / "root")
        got = (ds.classes, ds.train_labels.tolist(), ds.test_labels.tolist(), rows(ds.test_images))
        assert want is None or got == want, name
        want = got
    (tmp_path / "w.csv").write_text("file,label,split\n" + "\n".join(",".join(r).replace("/", "\\") for r in rows_))
    ds = sources.load(f"csv:{tmp_path / 'w.csv'}", tmp_path / "root")  # paths written on Windows
    assert (ds.classes, ds.train_labels.tolist(), ds.test_labels.tolist(), rows(ds.test_images)) == want
    latin = b"file,label\n" + "\n".join(f"{f},{c}" for f, c, _ in rows_).encode("latin-1")
    bad_csv(tmp_path, latin, catalog.DatasetSpecError, r"bad.csv is not UTF-8 text; save it as CSV UTF-8")
    bad_csv(
        tmp_path, "filename,label\nimgs/é0.png,a\n", catalog.DatasetSpecError, r"\(its first row: filename, label\)"
    )


def test_the_folders_tools_write_beside_the_images_are_no_classes_and_no_images(tmp_path):
    """``__MACOSX/`` (a zip made on a Mac) and ``@eaDir/`` (a Synology NAS's thumbnails) beside the class folders or
    inside one are ignored like hidden files: no class "__MACOSX" with no image, no thumbnail counted as a digit."""
    folder(tmp_path / "f", [4, 4])
    folder(tmp_path / "f", [2, 2], split="test")
    clean = sources.load(f"folder:{tmp_path / 'f'}", tmp_path / "root")
    glyph(tmp_path / "f" / "train" / "__MACOSX" / "0" / "._0.png", 0, 0)
    glyph(tmp_path / "f" / "train" / "1" / "@eaDir" / "0.png" / "SYNOFILE_THUMB_S.jpg", 1, 50)
    (tmp_path / "f" / "test" / "$RECYCLE.BIN").mkdir()
    again = sources.load(f"folder:{tmp_path / 'f'}", tmp_path / "root")
    assert again.classes == clean.classes == ("0", "1")
    assert torch.equal(again.train_labels, clean.train_labels) and rows(again.train_images) == rows(clean.train_images)


def test_the_cache_decodes_nothing_twice_and_notices_edits_additions_and_removals(tmp_path, monkeypatch):
    src = folder(tmp_path / "d", [4, 4])
    folder(src, [2, 2], "test")
    root = tmp_path / "root"
    real, calls = digits.load_image, []
    monkeypatch.setattr(digits, "load_image", lambda p: calls.append(p.name) or real(p))
    first = sources.load(f"folder:{src}", root)
    assert len(calls) == 12 and folders.cache_file(root, f"folder:{src}").is_file()

    def refuse(p):
        raise AssertionError(f"decoded {p} again")

    monkeypatch.setattr(digits, "load_image", refuse)
    again = sources.load(f"folder:{src}", root)  # decodes nothing
    for f in ("train_images", "train_labels", "val_images", "test_images", "test_labels"):
        assert torch.equal(getattr(first, f), getattr(again, f))
    monkeypatch.setattr(digits, "load_image", lambda p: calls.append(p.name) or real(p))
    calls.clear()
    glyph(src / "train" / "0" / "0.png", 3, 99)  # edited
    glyph(src / "train" / "1" / "new.png", 1, 98)  # added
    (src / "test" / "1" / "0.png").unlink()  # removed
    ds = sources.load(f"folder:{src}", root)
    assert sorted(calls) == ["0.png", "new.png"]  # only the changed files are decoded
    assert len(ds.train_labels) + len(ds.val_labels) == 9 and ds.test_labels.tolist() == [0, 0, 1]
    assert rows(digits.mnist_style(real(src / "train" / "0" / "0.png"))[None]) <= rows(ds.train_images) | rows(
        ds.val_images
    )
    assert not rows(first.test_images[2:3]) & rows(ds.test_images)  # the removed one is gone
    calls.clear()
    monkeypatch.setattr(digits, "conversion_version", lambda: "another conversion")
    sources.load(f"folder:{src}", root)
    assert len(calls) == 12  # another conversion: all 12 files are decoded again


def test_drawn_splits_are_stratified_keyed_and_disjoint(tmp_path):
    src = folder(tmp_path / "d", [10, 10, 10, 5])
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert torch.bincount(ds.test_labels).tolist() == [2, 2, 2, 1]  # TEST_FRACTION of each class
    assert torch.bincount(ds.val_labels).tolist() == [1, 1, 1, 1]  # VAL_FRACTION of each class (at least one)
    assert torch.bincount(ds.train_labels).tolist() == [7, 7, 7, 3]
    parts = [rows(ds.train_images), rows(ds.val_images), rows(ds.test_images)]
    assert sum(map(len, parts)) == 35 and len(set.union(*parts)) == 35  # every image once, in one split
    fresh = sources.load(f"folder:{src}", tmp_path / "elsewhere")  # another cache, the same draw
    for f in ("train_images", "val_images", "test_images", "test_labels"):
        assert torch.equal(getattr(ds, f), getattr(fresh, f))
    how = ds.provenance["splits"]["test"]
    assert (how["origin"], how["fraction"], how["seed"], how["fold"]) == ("drawn", 0.2, splits.SPLIT_SEED, 12)
    assert "20% of each class" in how["about"] and "10% of each class" in ds.provenance["splits"]["val"]["about"]


def test_too_few_images_name_the_class_and_what_fits(tmp_path):
    src = folder(tmp_path / "a", [5, 2])
    with pytest.raises(catalog.DatasetSpecError) as e:
        sources.load(f"folder:{src}", tmp_path / "root")
    msg = str(e.value)
    assert "class '1' has 2 images in train/" in msg and "test and a validation split" in msg and "3 needed" in msg
    assert "add a test/ folder and a val/ folder" in msg and "\n" not in msg
    folder(src, [1, 1], "test")
    assert torch.bincount(sources.load(f"folder:{src}", tmp_path / "root").val_labels).tolist() == [1, 1]
    one = folder(tmp_path / "b", [4, 1])
    folder(one, [1, 1], "test")
    with pytest.raises(catalog.DatasetSpecError, match=r"class '1' has 1 image in train/.*validation split.*a val/ f"):
        sources.load(f"folder:{one}", tmp_path / "root")
    folder(one, [1, 1], "val")
    assert sources.load(f"folder:{one}", tmp_path / "root").train_labels.tolist() == [0, 0, 0, 0, 1]
    # a long tail down to 3 images loads, with a test folder or without
    lt = folder(tmp_path / "lt", [20, 8, 3])
    ds = sources.load(f"folder:{lt}", tmp_path / "root")
    assert torch.bincount(ds.train_labels).tolist() == [14, 5, 1] and torch.bincount(ds.val_labels).tolist() == [
        2,
        1,
        1,
    ]
    folder(lt, [3, 3, 3], "test")
    ds = sources.load(f"folder:{lt}", tmp_path / "root")
    assert torch.bincount(ds.train_labels).tolist() == [18, 7, 2] and torch.bincount(ds.val_labels).tolist() == [
        2,
        1,
        1,
    ]


def _fails(name, root, error, match, **kw):
    with pytest.raises(error, match=match) as e:
        sources.load(name, DataSettings(root, **kw))
    assert isinstance(e.value, errors.HwrError) and "\n" not in str(e.value)


def test_bad_input_is_one_line_naming_the_problem_and_writes_nothing(tmp_path):
    root = tmp_path / "root"
    _fails(f"folder:{tmp_path / 'nowhere'}", root, catalog.DataUnavailableError, "nowhere is not a folder")
    _fails(f"csv:{tmp_path / 'nowhere.csv'}", root, catalog.DataUnavailableError, "nowhere.csv is not a file")
    _fails("folder:", root, catalog.DatasetSpecError, "names no path")
    folder(tmp_path / "flat", [2], "val")
    _fails(f"folder:{tmp_path / 'flat'}", root, catalog.DatasetSpecError, "no train/ folder")
    src = folder(tmp_path / "d", [3, 3])
    _fails(f"folder:{src / 'train'}", root, catalog.DatasetSpecError, rf"a split folder itself; .*: folder:{src}$")
    (src / "train" / "2").mkdir()
    (src / "train" / "2" / "notes.txt").write_text("no image")
    _fails(f"folder:{src}", root, catalog.DatasetSpecError, r"class folder .*train/2 holds no image")
    (src / "train" / "2" / "notes.txt").unlink()
    (src / "train" / "2").rmdir()
    folder(src, [1, 1, 1], "test", ["0", "1", "x"])
    _fails(f"folder:{src}", root, catalog.DatasetSpecError, r"class 'x' is in test/ but not in train/")
    for f in (src / "test" / "x").iterdir():
        f.unlink()
    (src / "test" / "x").rmdir()
    (src / "train" / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _fails(f"folder:{src}", root, InputError, r"train/0/broken.png: not an image file.*--skip-bad")
    (src / "train" / "0" / "broken.png").unlink()
    Image.new("RGB", (30, 30), (200, 180, 150)).save(src / "train" / "1" / "blank.jpg")  # one colour: no ink
    _fails(f"folder:{src}", root, InputError, r"train/1/blank.jpg: no ink found")
    assert not root.exists()  # nothing written when loading fails
    (src / "train" / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = sources.load(f"folder:{src}", DataSettings(root, skip_bad=True))
    assert sorted(s["file"] for s in ds.provenance["skipped"]) == ["train/0/broken.png", "train/1/blank.jpg"]
    assert "no ink" in {s["file"]: s["why"] for s in ds.provenance["skipped"]}["train/1/blank.jpg"]
    assert len(ds.train_labels) + len(ds.val_labels) == 6 and len(ds.test_labels) == 2
    assert (
        sources.load(f"folder:{src}", DataSettings(root, skip_bad=True)).provenance["skipped"]
        == ds.provenance["skipped"]
    )  # remembered: not decoded again
    _fails(f"folder:{src}", root, InputError, "broken.png")  # and still refused without --skip-bad
    for f in (src / "train" / "0").iterdir():
        f.unlink()
    for k in range(2):
        Image.new("L", (20, 20), 255).save(src / "train" / "0" / f"{k}.png")  # every image of class 0 blank
    # the message says why the class is empty and asks for images, not for a val/ folder that could not help
    _fails(
        f"folder:{src}",
        root,
        catalog.DatasetSpecError,
        r"class '0' has no readable training image \(--skip-bad skipped 2\); add some or remove it",
        skip_bad=True,
    )
    glyph(src / "train" / "0" / "ok.png", 0, 77)  # one readable image left: too few to draw a split from
    _fails(
        f"folder:{src}",
        root,
        catalog.DatasetSpecError,
        r"class '0' has 1 image in train/ once --skip-bad skipped 2 unreadable or blank files of it: too few",
        skip_bad=True,
    )


def test_a_test_only_folder_loads_for_scoring_only(tmp_path):
    src = folder(tmp_path / "t", [2, 3], "test", ["7", "3"])
    _fails(f"folder:{src}", tmp_path / "root", catalog.DatasetSpecError, "no training images.*hwr evaluate RUN")
    ds = sources.load(f"folder:{src}", tmp_path / "root", require_train=False)
    assert ds.classes == ("3", "7") and ds.train_images.shape == (0, 1, 28, 28) and ds.val_images is None
    assert ds.test_labels.tolist() == [0, 0, 0, 1, 1]
    mapped = folders.on_classes(ds, [str(c) for c in range(10)])
    assert mapped.test_labels.tolist() == [3, 3, 3, 7, 7] and mapped.num_classes == 10
    with pytest.raises(catalog.DatasetSpecError, match=r"class '3' is not one of the 2 classes of runs/x \(a, b\)"):
        folders.on_classes(ds, ["a", "b"], whose="runs/x")


def test_scoring_reads_only_the_test_split_and_leaves_the_cache_whole(tmp_path, monkeypatch):
    """``only_test`` (``hwr evaluate``): a class of one training image and an undecodable training file, which stop
    a training load, do not stop scoring; only the test files are decoded, and the cache of the whole is kept."""
    src = folder(tmp_path / "d", [3, 3])
    folder(src, [2, 2], "test")
    root = tmp_path / "root"
    whole = sources.load(f"folder:{src}", root)
    cache = folders.cache_file(root, f"folder:{src}")
    kept = cache.read_bytes()
    for f in (src / "train" / "1").iterdir():
        f.unlink()
    glyph(src / "train" / "1" / "only.png", 1, 50)
    (src / "train" / "0" / "broken.png").write_bytes(b"not a png")
    _fails(f"folder:{src}", root, catalog.DatasetSpecError, "class '1' has 1 image in train/: too few")
    real, calls = digits.load_image, []
    monkeypatch.setattr(digits, "load_image", lambda p: calls.append(p.name) or real(p))
    ds = sources.load(f"folder:{src}", root, require_train=False, only_test=True)
    assert calls == [] and cache.read_bytes() == kept  # the test images came from the cache, which stays whole
    assert torch.equal(ds.test_images, whole.test_images) and ds.test_labels.tolist() == [0, 0, 1, 1]
    assert ds.classes == ("0", "1") and len(ds.train_labels) == 0
    fresh = folder(tmp_path / "f", [3, 3])
    folder(fresh, [2, 2], "test")
    calls.clear()
    for _ in range(2):  # never loaded whole: the first scoring decodes the test images, the second none
        sources.load(f"folder:{fresh}", root, require_train=False, only_test=True)
    assert len(calls) == 4
    sources.load(f"folder:{fresh}", root)
    assert len(calls) == 4 + 6  # then a whole load decodes only the training images


def test_linked_folders_and_every_suffix_pil_opens_count_and_a_dangling_link_is_named(tmp_path):
    """Images behind a symlinked subfolder count (``Path.rglob`` before 3.13 skipped them), so do ``.jfif``,
    ``.jpe``, ``.pbm`` and ``.tga`` files (what ``hwr predict`` reads), and a dangling link is an unreadable file,
    named, or skipped and listed with ``--skip-bad``, never dropped without a word."""
    src = folder(tmp_path / "d", [3, 3])
    elsewhere = folder(tmp_path / "elsewhere", [2], classes=["0"]) / "train" / "0"
    (src / "train" / "0" / "more").symlink_to(elsewhere, target_is_directory=True)
    (src / "train" / "0" / "loop").symlink_to(src / "train" / "0", target_is_directory=True)  # a cycle ends
    plain = Image.open(glyph(tmp_path / "g.png", 1, 60)).convert("RGB")
    for suffix, fmt in ((".jfif", "JPEG"), (".jpe", "JPEG"), (".pbm", "PPM"), (".tga", "TGA")):
        (plain.convert("1") if suffix == ".pbm" else plain).save(src / "train" / "1" / f"x{suffix}", fmt)
    root = tmp_path / "root"
    ds = sources.load(f"folder:{src}", root)
    counts = torch.bincount(torch.cat([ds.train_labels, ds.val_labels, ds.test_labels]), minlength=2).tolist()
    assert counts == [3 + 2, 3 + 4]
    (src / "train" / "1" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    _fails(f"folder:{src}", root, InputError, r"gone.png: cannot read the file .*--skip-bad")
    skipped = sources.load(f"folder:{src}", DataSettings(root, skip_bad=True)).provenance["skipped"]
    assert [s["file"] for s in skipped] == ["train/1/gone.png"]


def test_a_run_trained_on_a_folder_scores_a_test_folder_of_some_of_its_classes(tmp_path):
    data = DataSettings(tmp_path / "root")
    src = folder(tmp_path / "train", [6] * 5, classes=["0", "1", "3", "7", "9"])
    cfg = RunConfig(
        model_config=TINY_CNN,
        dataset=f"folder:{src}",
        epochs=1,
        batch_size=8,
        optim=OptimConfig("adam", 3e-3, "constant"),
    )
    run = tmp_path / "run"
    m = task.run(cfg, run, execution=EAGER, write_figures=False, data=data)
    assert m["classes"] == ["0", "1", "3", "7", "9"]
    others = folder(tmp_path / "others", [3, 2], "test", ["7", "3"])  # other writers, two of its classes
    r = task.evaluate_run(run, f"folder:{others}", data=data)
    confusion = torch.tensor(r["confusion"])
    assert confusion.shape == (5, 5) and confusion.sum(1).tolist() == [0, 0, 2, 3, 0]  # rows of '3' and '7'
    model, params, state, meta = task.load_run(run)
    x = torch.cat([digits.mnist_style(digits.load_image(f))[None] for f in sorted((others / "test" / "3").iterdir())])
    x7 = torch.cat([digits.mnist_style(digits.load_image(f))[None] for f in sorted((others / "test" / "7").iterdir())])
    y = torch.tensor([2, 2, 3, 3, 3])
    want = task.evaluate(model, params, state, torch.cat([x, x7]), y, 5, mean=meta["mean"], std=meta["std"])
    assert r["confusion"] == want["confusion"] and r["count"] == 5
    bad = folder(tmp_path / "letters", [1, 1], "test", ["3", "x"])
    with pytest.raises(catalog.DatasetSpecError, match=rf"class 'x' is not one of the 5 classes of {run}"):
        task.evaluate_run(run, f"folder:{bad}", data=data)


def test_names_are_recognised_wherever_a_data_set_is_named(tmp_path):
    assert folders.is_user_data("folder:/x") and folders.is_user_data("csv:x.csv") and not folders.is_user_data("mnist")
    assert catalog.check_name("folder:/any/path") == "folder" and catalog.check_name("csv:l.csv") == "csv"
    assert "your own images" in catalog.describe("folder:/p")
    assert catalog.layout("folder:~/p", tmp_path)[1] == () and not str(catalog.layout("folder:~/p")[0]).startswith("~")
    with pytest.raises(catalog.DatasetSpecError, match="names no path"):
        catalog.check_name("csv:")
    with pytest.raises(catalog.UnknownDatasetError, match="folder:PATH / csv:FILE"):
        catalog.check_name("mnits")


def test_the_benchmark_folder_is_long_tailed_with_balanced_val_and_test(tmp_path):
    from benchmarks import digit_folder

    out = tmp_path / "digits"
    counts = digit_folder.main([str(out), "--head", "8", "--tail", "3", "--val", "1", "--test", "2", "--seed", "1"])
    assert counts["train"] == digit_folder.long_tail(8, 3) == [8, 7, 6, 6, 5, 5, 4, 4, 3, 3]
    assert {p.suffix for p in out.rglob("*.*")} == {".png", ".jpg"}
    ds = sources.load(f"folder:{out}", tmp_path / "root")  # every image reads (none blank)
    assert torch.bincount(ds.train_labels).tolist() == counts["train"] and ds.classes == tuple("0123456789")
    assert torch.bincount(ds.val_labels).tolist() == [1] * 10 and torch.bincount(ds.test_labels).tolist() == [2] * 10
    again = tmp_path / "again"
    digit_folder.main([str(again), "--head", "8", "--tail", "3", "--val", "1", "--test", "2", "--seed", "1"])
    assert (again / "train" / "9" / "9_002.png").read_bytes() == (out / "train" / "9" / "9_002.png").read_bytes()


def test_a_phone_folder_of_heic_and_avif_photos_loads_as_its_pngs_do(tmp_path):
    """A phone saves HEIC (an iPhone's default) or AVIF: ``.heic``, ``.HEIC``, ``.heif`` and ``.avif`` files are
    images of their class (pillow-heif and Pillow decode them), read as the same glyphs as PNG copies, not skipped
    for an unknown suffix."""
    png, phone = tmp_path / "png", tmp_path / "phone"
    for c in range(2):  # every split given: a drawn split goes by each file's content, which the copies do not share
        for k, (split, suffix) in enumerate(
            zip(("train", "train", "val", "test"), (".heic", ".HEIC", ".heif", ".avif"))
        ):
            img = Image.open(glyph(png / split / str(c) / f"{k}.png", c, k, style="photo"))
            (phone / split / str(c)).mkdir(parents=True, exist_ok=True)
            img.save(phone / split / str(c) / f"{k}{suffix}", "AVIF" if suffix == ".avif" else "HEIF", quality=95)
    a, b = (sources.load(f"folder:{d}", tmp_path / "root") for d in (png, phone))
    counts = [{k: v["counts"] for k, v in d.provenance["splits"].items()} for d in (a, b)]
    assert b.provenance["skipped"] == [] and counts[0] == counts[1] and sum(counts[1]["train"]) > 0
    x, y = (torch.cat([d.train_images, d.val_images, d.test_images]).float() for d in (a, b))
    assert torch.equal(
        torch.cat([a.train_labels, a.val_labels, a.test_labels]),
        torch.cat([b.train_labels, b.val_labels, b.test_labels]),
    )
    corr = torch.nn.functional.cosine_similarity(x.flatten(1), y.flatten(1)).tolist()
    # lossy at quality 95: the same glyph, not the same bytes; a one-pixel shift of a thin stroke costs 0.2
    assert min(corr) > 0.7 and sum(corr) / len(corr) > 0.95, corr


def where(ds):
    """Each image of ``ds`` by its bytes: ``(label, split)``."""
    return {
        bytes(img.flatten().tolist()): (label, s)
        for s in folders.SPLITS
        for img, label in zip(getattr(ds, f"{s}_images"), getattr(ds, f"{s}_labels").tolist())
    }


def _moved(before, after):
    """``(label, split before, split after)`` of each image in both whose split changed."""
    return [(before[r][0], before[r][1], after[r][1]) for r in before.keys() & after.keys() if before[r] != after[r]]


def test_drawn_splits_stay_put_when_a_file_is_added_or_removed(tmp_path):
    """A drawn image's split hangs on its own content: one file added to (or removed from) a class leaves every
    other class's test and validation images as they were, and moves at most the images at its own class's
    boundary: one into or out of test, and one more across validation's when both are drawn (a keyed permutation
    of all the images redrew every split, so a run scored after the folder grew met images it had trained on)."""
    root = tmp_path / "root"
    src = folder(tmp_path / "d", [14, 12, 9])
    before = where(sources.load(f"folder:{src}", root))
    assert len(before) == 35
    for change, cls in (
        (lambda: glyph(src / "train" / "0" / "new.png", 0, 77), 0),
        ((src / "train/1/4.png").unlink, 1),
    ):
        change()
        after = where(sources.load(f"folder:{src}", root))
        moved = _moved(before, after)
        assert {m[0] for m in moved} <= {cls} and len(moved) <= 2, moved
        assert sum((m[1] == "test") != (m[2] == "test") for m in moved) <= 1, moved
        before = after
    given = folder(tmp_path / "g", [10, 11])  # val/ given: test is the only draw, at most one image moves
    folder(given, [2, 2], "val")
    before = where(sources.load(f"folder:{given}", root))
    for k in range(6):
        glyph(given / "train" / str(k % 2) / f"new{k}.png", k % 2, 50 + k)
        after = where(sources.load(f"folder:{given}", root))
        moved = _moved(before, after)
        assert len(moved) <= 1 and {m[0] for m in moved} <= {k % 2}, moved
        before = after
    assert splits.held_out_counts(torch.tensor([0, 1, 2, 5, 14]), 0.2).tolist() == [0, 0, 1, 1, 3]


def test_split_folders_go_by_any_case_and_the_exports_aliases(tmp_path):
    """``Train/``, ``validation/``, ``Dev/``, ``valid/``, ``TEST/`` (Roboflow, Hugging Face and Kaggle exports) are
    the splits they name, never silently dropped; two folders of one split are refused, both named."""
    src = folder(tmp_path / "d", [3, 3], "Train")
    folder(src, [2, 2], "validation", offset=100)
    folder(src, [2, 2], "TEST", offset=200)
    for prev, alias in (("validation", "validation"), ("validation", "Dev"), ("Dev", "valid")):
        (src / prev).rename(src / alias)
        ds = sources.load(f"folder:{src}", tmp_path / "root")
        assert [len(ds.train_labels), len(ds.val_labels), len(ds.test_labels)] == [6, 4, 4]
        assert {s["origin"] for s in ds.provenance["splits"].values()} == {"given"}
        assert ds.provenance["splits"]["val"]["about"] == f"given: {src}/{alias}/"
    folder(src, [1, 1], "val", offset=300)
    _fails(f"folder:{src}", tmp_path / "root", catalog.DatasetSpecError, r"val/ and valid/ in .* both hold the val")
    lines = [
        f"d/Train/{c}/{k}.{'jpg' if k == 2 else 'png'},{c},{'Valid' if k == 2 else 'train'}"
        for c in "01"
        for k in range(3)
    ]
    (tmp_path / "s.csv").write_text("file,label,split\n" + "\n".join(lines) + "\n")
    ds = sources.load(f"csv:{tmp_path / 's.csv'}", tmp_path / "root")  # a CSV's split column takes them too
    assert ds.provenance["splits"]["val"]["origin"] == "given" and len(ds.val_labels) == 2


def test_a_csv_listing_one_file_twice_is_refused_naming_both_lines(tmp_path):
    for i in range(6):
        glyph(tmp_path / "imgs" / f"{i}.png", i % 2, i)
    rows = [f"imgs/{i}.png,{'ab'[i % 2]},train" for i in range(6)]  # lines 2..7
    for extra, match in (
        ("imgs/0.png,a,test", r"lists .*imgs/0.png twice \(lines 2 and 8\)"),  # in two splits
        ("imgs/1.png,a,train", r"lists .*imgs/1.png twice \(lines 3 and 8\)"),  # under two labels
        ("./imgs//2.png,a,train", r"lists .*/imgs/2.png twice \(lines 4 and 8\)"),  # spelt another way
    ):
        (tmp_path / "s.csv").write_text("file,label,split\n" + "\n".join([*rows, extra]) + "\n")
        _fails(f"csv:{tmp_path / 's.csv'}", tmp_path / "root", InputError, match)
    assert not (tmp_path / "root").exists()


def test_a_folder_path_that_is_not_utf8_loads(tmp_path):
    """A path with bytes that are not UTF-8 (an old Latin-1 folder name) hashes as its bytes for the cache."""
    src = folder(tmp_path / os.fsdecode(b"caf\xe9"), [3, 3])
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert len(ds.train_labels) + len(ds.val_labels) + len(ds.test_labels) == 6
    assert folders.cache_file(tmp_path / "root", f"folder:{src}").is_file()


def test_class_names_are_compared_in_nfc(tmp_path):
    """``é`` written decomposed (NFD: a macOS folder) and composed (NFC: typed, or a CSV) is one class."""
    nfd, nfc = unicodedata.normalize("NFD", "é"), unicodedata.normalize("NFC", "é")
    src = folder(tmp_path / "d", [1, 1], classes=[nfd, "a"])
    folder(src, [1, 1], "val", classes=[nfc, "a"])
    folder(src, [2, 2], "test", classes=[nfc, "a"])
    ds = sources.load(f"folder:{src}", tmp_path / "root")
    assert ds.classes == ("a", nfc) and torch.bincount(ds.test_labels).tolist() == [2, 2]
    lines = [f"d/test/{c}/{k}.png,{nfd if c == nfc and k == 0 else c},test" for c in (nfc, "a") for k in range(2)]
    (tmp_path / "s.csv").write_text("file,label,split\n" + "\n".join(lines) + "\n")
    assert sources.load(f"csv:{tmp_path / 's.csv'}", tmp_path / "root", require_train=False).classes == ("a", nfc)
    assert folders.on_classes(ds, [nfd, "a", "b"]).test_labels.tolist() == [1, 1, 0, 0]  # an older run's NFD name


def test_an_unreadable_subfolder_is_named_not_skipped(tmp_path, monkeypatch):
    """A class's subfolder that cannot be listed is an error naming it, ``--skip-bad`` or not: its images would
    otherwise drop out without a word (``os.walk`` ignores errors by default). Faked: the tests may run as root."""
    src = folder(tmp_path / "d", [3, 3])
    for k in range(2):
        glyph(src / "train" / "1" / "batch2" / f"{k}.png", 1, 50 + k)
    listdir = os.scandir

    def scandir(path="."):
        if str(path).endswith("batch2"):
            raise PermissionError(13, "Permission denied", str(path))
        return listdir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    for skip_bad in (False, True):
        _fails(
            f"folder:{src}",
            tmp_path / "root",
            InputError,
            r"cannot read the folder .*batch2 \(Permission denied\)",
            skip_bad=skip_bad,
        )


def test_a_given_val_split_whose_every_image_is_skipped_is_drawn_and_checked(tmp_path):
    """``--skip-bad`` may empty a given ``val/``: validation is then drawn from train/ (and says so), and a class too
    small to give one is named, as it is when no val/ was given."""
    src = folder(tmp_path / "s", [3, 3])
    for c in ("0", "1"):
        (src / "val" / c).mkdir(parents=True)
        Image.new("L", (20, 20), 255).save(src / "val" / c / "blank.png")  # no ink: skipped
    ds = sources.load(f"folder:{src}", DataSettings(tmp_path / "root", skip_bad=True))
    assert ds.provenance["splits"]["val"]["origin"] == "drawn" and torch.bincount(ds.val_labels).tolist() == [1, 1]
    assert len(ds.provenance["skipped"]) == 2
    for f in list((src / "train" / "1").iterdir())[1:]:
        f.unlink()  # class 1 keeps one training image: nothing to draw its validation from
    (src / "test" / "1").mkdir(parents=True)
    glyph(src / "test" / "1" / "t.png", 1, 300)
    (src / "test" / "0").mkdir(parents=True)
    glyph(src / "test" / "0" / "t.png", 0, 300)
    _fails(
        f"folder:{src}", tmp_path / "root", catalog.DatasetSpecError, "class '1' has 1 image in train/", skip_bad=True
    )


def test_unlabelled_images_are_read_without_labels_and_never_a_scored_image(tmp_path):
    """``PATH/unlabeled/`` (either spelling, any case, any nesting): images for self-training, each content once,
    less any that is also a val or test image; a test-only load reads none; two such folders are an error."""
    root = folder(tmp_path / "f", [3, 3])
    folder(root, [2, 2], split="test")
    made = [glyph(root / "Unlabelled" / "batch" / f"u{k}.png", k % 2, 300 + k) for k in range(4)]
    glyph(root / "Unlabelled" / "u0 again.png", 0, 300)  # the same picture twice: read once
    (root / "Unlabelled" / "scored.png").write_bytes(next((root / "test" / "0").iterdir()).read_bytes())
    (root / "Unlabelled" / "notes.txt").write_text("not an image")
    ds = sources.load(f"folder:{root}", DataSettings(tmp_path / "data"))
    rows = lambda x: sorted(bytes(t.flatten().tolist()) for t in x)
    assert rows(ds.unlabeled_images) == rows([digits.mnist_style(digits.load_image(p)) for p in made])
    assert ds.provenance["unlabeled"] == {"count": 4, "dropped_as_val_or_test": 1}
    assert len(ds.train_labels) + len(ds.val_labels) == 6 and ds.classes == ("0", "1")  # none of them labelled
    scored = sources.load(f"folder:{root}", DataSettings(tmp_path / "data"), require_train=False, only_test=True)
    assert scored.unlabeled_images is None  # scoring a run reads none
    plain = folder(tmp_path / "g", [3, 3])
    assert sources.load(f"folder:{plain}", DataSettings(tmp_path / "data")).unlabeled_images is None
    glyph(root / "unlabeled" / "x.png", 1, 400)
    _fails(f"folder:{root}", tmp_path / "data", catalog.DatasetSpecError, "both hold unlabelled images")
