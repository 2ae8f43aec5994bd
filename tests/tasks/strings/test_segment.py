"""hwr.tasks.strings.segment: connected components of a string image, merged by column overlap, read left to right."""

import pytest
import torch

from hwr.errors import InputError
from hwr.tasks.strings import segment


def _canvas(*boxes: tuple[int, int, int, int], h: int = 32, w: int = 80) -> torch.Tensor:
    """uint8 (1, h, w) with ink in each (top, bottom, left, right) box."""
    x = torch.zeros(1, h, w, dtype=torch.uint8)
    for t, b, left, r in boxes:
        x[0, t:b, left:r] = 255
    return x


def _narrow(crops: torch.Tensor) -> torch.Tensor:
    """A stand-in classifier: 1 for a bar (few ink columns in its 28x28 crop), else 0."""
    return ((crops[:, 0] > 0).any(1).sum(1) < 10).long()


def test_components_left_to_right_merged_and_specks_dropped():
    x = _canvas((4, 28, 40, 44), (4, 14, 10, 30), (16, 28, 12, 28), (2, 3, 60, 61))  # bar, a broken blob, a speck
    before = x.clone()
    parts = segment.components(x)
    assert [(p.x0, p.x1) for p in parts] == [(10, 29), (40, 43)]  # the blob's halves are one digit
    assert torch.equal(x, before)  # pure
    assert parts[1].ink.shape == (32, 80) and float(parts[1].ink[:, 10:30].sum()) == 0.0  # only its own pixels
    assert float(parts[0].ink.max()) == 1.0
    same = segment.components(x[0].float() / 255.0)
    assert [(p.x0, p.x1) for p in same] == [(10, 29), (40, 43)]


def test_touching_digits_fuse_into_one_component():
    x = _canvas((4, 28, 10, 16), (4, 28, 16, 30))  # two shapes sharing a column: one component
    assert len(segment.components(x)) == 1


def test_read_orders_digits_and_keeps_empty_strings():
    bar_then_blob = _canvas((4, 28, 10, 13), (4, 28, 30, 50))
    blob_then_bar = _canvas((4, 28, 10, 30), (4, 28, 50, 53))
    empty = torch.zeros(1, 32, 80, dtype=torch.uint8)
    calls = []

    def classify(crops):
        calls.append(crops.shape)
        assert crops.dtype == torch.uint8 and crops.shape[1:] == (1, 28, 28)
        return _narrow(crops)

    assert segment.read(classify, [bar_then_blob, blob_then_bar, empty]) == [[1, 0], [0, 1], []]
    assert len(calls) == 1 and calls[0][0] == 4  # one batched call
    assert segment.read(classify, [empty]) == [[]]


def test_bad_input():
    with pytest.raises(InputError, match=r"\(H, W\)"):
        segment.components(torch.zeros(2, 1, 32, 80))
