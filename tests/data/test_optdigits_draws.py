"""optdigits-lt's ``draw`` parameter: other images for the same long-tail counts; draw 0 is the default set."""

import pytest
import torch

from hwr.data import catalog, sources


def test_draws_keep_the_counts_and_the_splits_and_change_the_images():
    default, zero, one = (sources.load(n) for n in ("optdigits-lt", "optdigits-lt:draw=0", "optdigits-lt:draw=1"))
    assert zero.name == "optdigits-lt" and one.name == "optdigits-lt:draw=1"
    assert torch.equal(default.train_images, zero.train_images)
    assert torch.equal(torch.bincount(one.train_labels), torch.bincount(default.train_labels))
    assert not torch.equal(one.train_images, default.train_images)
    assert torch.equal(one.test_images, default.test_images) and torch.equal(one.val_images, default.val_images)
    rows = lambda x: {bytes(r.flatten().tolist()) for r in x}
    assert not rows(one.train_images) & (rows(one.test_images) | rows(one.val_images))


def test_a_bad_draw_is_refused():
    with pytest.raises(catalog.DatasetSpecError, match="draw must be a non-negative integer"):
        catalog.parse_name("optdigits-lt:draw=1.5")
