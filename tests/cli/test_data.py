"""``hwr data list | fetch | info | show | compare`` in process: output, PNG files, and one-line errors (exit 2)."""

import pytest
from cli_run import bad_here, here
from PIL import Image

from hwr.data import catalog, sources


def test_list(capsys, tmp_path):
    rc, out, _ = here(capsys, "data", "list", "--root", str(tmp_path))
    assert rc == 0 and all(name in out for name in catalog.names())


def test_fetch_prints_sizes_checksums_and_time(capsys):
    rc, out, _ = here(capsys, "data", "fetch", "mnist")
    assert rc == 0
    for name, (sha, _) in catalog.MNIST_SHA256.items():
        assert f"{sha}  {name}" in out
    assert "4 files, 52.4 MiB" in out and " s\n" in out


def test_info(capsys, tmp_path):
    rc, out, _ = here(capsys, "data", "info", "optdigits-lt", "--root", str(tmp_path))
    assert rc == 0
    assert "85" in out and "total" in out and "206" in out and "400" in out and "530" in out  # head, sums
    assert "duplicate a training image: 0" in out and "mean 0." in out and "imbalance" in out
    rc, out, _ = here(capsys, "data", "info", "optdigits-lt:ratio=50,order=1", "--root", str(tmp_path))
    assert rc == 0 and "245" in out and "89" in out  # another draw: another head class (1), another total


def test_show_and_compare_write_pngs(capsys, tmp_path):
    grid = tmp_path / "show.png"
    rc, out, _ = here(
        capsys,
        "data",
        "show",
        "mnist",
        "--augment",
        "standard,elastic_alpha=34",
        "--n",
        "6",
        "--rows",
        "2",
        "--out",
        str(grid),
    )
    assert rc == 0 and str(grid) in out
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > im.height
    both = tmp_path / "compare.png"
    rc, _, _ = here(
        capsys, "data", "compare", "mnist", "optdigits", "--per-class", "3", "--out", str(both), "--root", str(tmp_path)
    )  # mnist is fetched into this root too: present, so no download
    assert rc == 0
    with Image.open(both) as im:
        assert im.format == "PNG" and im.height > im.width  # 20 rows (10 classes x 2 sets) of 3


@pytest.fixture(autouse=True)
def _mnist_in_tmp_roots(tmp_path):
    """Give a tmp root MNIST by linking the user's fetched files (no second download)."""
    src = sources.fetch("mnist")
    dst = tmp_path / "MNIST" / "raw"
    dst.mkdir(parents=True)
    for name in catalog.MNIST_SHA256:
        (dst / name).symlink_to(src / name)


def test_bad_input_gets_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HWR_OFFLINE", "1")  # the kmnist lines must fail here even where the internet is reachable
    bad_here(capsys, "data", "fetch", "mnsit", match="unknown dataset 'mnsit'; choose one of mnist")
    bad_here(
        capsys,
        "data",
        "show",
        "mnist",
        "--augment",
        "rot=3",
        "--out",
        str(tmp_path / "x.png"),
        match="unknown augmentation key 'rot'",
    )
    bad_here(capsys, "data", "show", "mnist", "--n", "0", "--out", str(tmp_path / "x.png"), match="--n must be >= 1")
    bad_here(
        capsys,
        "data",
        "fetch",
        "kmnist",
        "--root",
        str(tmp_path),
        "--offline",
        match=f"place the files in {tmp_path}/KMNIST/raw/",
    )
    bad_here(
        capsys,
        "data",
        "compare",
        "mnist",
        "kmnist",
        "--root",
        str(tmp_path),
        "--out",
        str(tmp_path / "c.png"),
        match="cannot obtain kmnist",
    )
