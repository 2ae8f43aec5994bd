"""``hwr data compare`` draws its two data sets side by side (a panel each, a row per class, compact), and
``errors.png`` says how many misclassified images it shows of how many there were."""

import numpy as np
import pytest
import torch
from PIL import Image

from hwr import report


def _rows(classes: int, per_class: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    g = np.random.default_rng(seed)
    return [tuple(g.integers(0, 255, (per_class, 28, 28), dtype=np.uint8) for _ in range(2)) for _ in range(classes)]


def test_compare_is_two_panels_side_by_side_named_by_their_data_sets(tmp_path):
    fig = report.compare_figure(("mnist", "optdigits"), [str(c) for c in range(10)], _rows(10, 8), title="t")
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["mnist", "optdigits"]
    (left, right) = (ax.get_position() for ax in axes)
    assert left.x1 <= right.x0 and abs(left.y0 - right.y0) < 0.05  # beside each other, not stacked
    assert [t.get_text() for t in axes[0].get_yticklabels()] == [str(c) for c in range(10)]
    path = report.save_figure(fig, tmp_path / "cmp.png")
    w, h = Image.open(path).size
    assert h < 1200 and w > h  # 10 classes x 8 images: compact, wider than tall (was 2,315 px tall)
    grey = np.asarray(Image.open(path).convert("L"))
    blank = (grey > 250).all(1)  # rows of pure white across the picture
    longest = max((len(run) for run in "".join("1" if b else "0" for b in blank).split("0")), default=0)
    assert longest < 0.1 * h  # no empty band under the title


def test_compare_pads_a_class_with_fewer_images_and_refuses_nothing_to_draw():
    rows = _rows(2, 4)
    rows[1] = (rows[1][0], rows[1][1][:1])  # one image of class 1 on the right
    report.compare_figure(("a", "b"), ["x", "y"], rows)
    with pytest.raises(ValueError, match="at least one class"):
        report.compare_figure(("a", "b"), [], [])


def test_errors_title_counts_every_misclassified_image():
    confusion = torch.tensor([[50, 3], [121, 10]])
    assert report.figures.errors_title(40, confusion) == (
        "misclassified test images (true->predicted): showing 40 of 124 (of 184 test images)"
    )
    assert report.figures.errors_title(0, torch.eye(2, dtype=torch.long) * 5) == (
        "no misclassified test images (all 10 right)"
    )


def test_mosaic_lays_images_in_one_row():
    m = report.figures.mosaic(np.stack([np.zeros((3, 2)), np.ones((3, 2))]))
    assert m.shape == (3, 6) and (m[:, :2] == 0).all() and (m[:, 2:4] == 128).all() and (m[:, 4:] == 1).all()
