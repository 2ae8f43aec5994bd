"""hwr.files: atomic writes leave either the old file or the new one, and no temporary files."""

import json

import pytest

from hwr import files


def test_write_bytes_and_json_create_folders_and_replace(tmp_path):
    path = tmp_path / "run" / "sub" / "data.bin"
    assert files.write_bytes(path, b"one") == path
    assert path.read_bytes() == b"one"
    files.write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    j = files.write_json(tmp_path / "m.json", {"acc": 0.99, "classes": [1, 2]})
    assert json.loads(j.read_text()) == {"acc": 0.99, "classes": [1, 2]}
    assert j.read_text().endswith("\n")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["data.bin", "m.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt.json"
    files.write_json(path, {"v": 1})

    def half_write(tmp):
        tmp.write_text('{"v": 2, "trunc')  # a torn file ...
        raise RuntimeError("disk full")  # ... then the writer fails

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(path, half_write)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.json"]


def test_unserialisable_json_keeps_old_file(tmp_path):
    path = tmp_path / "c.json"
    files.write_json(path, [1])
    with pytest.raises(TypeError):
        files.write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_interrupt_during_write_leaves_no_file(tmp_path):
    path = tmp_path / "new.bin"

    def interrupted(tmp):
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(path, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_slug_keeps_what_every_file_system_takes():
    assert files.slug("mnist:lowres=0.5") == "mnist_lowres_0.5"
    assert files.slug("optdigits-lt:ratio=50,order=1") == "optdigits-lt_ratio_50_order_1"
    assert files.slug("folder:/tmp/my digits") == "folder__tmp_my_digits"
