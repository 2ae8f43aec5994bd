"""hwr.tune.stats: the paired t interval against a hand-computed case, one unit, and the wording; the bootstrap
that resamples runs and test images (macro-F1 under image weights against scikit-learn, what it sees that a
runs-only interval cannot, its key, its chunks and its errors)."""

import math

import pytest
import torch
from sklearn.metrics import f1_score

from hwr import random
from hwr.tune import stats


def test_paired_interval_matches_the_hand_computed_case():
    # diffs [1, 2, 3, 4]: mean 2.5, sd 1.2910, t(0.975, 3) = 3.1824 -> 2.5 -/+ 2.0543
    iv = stats.paired_interval([2, 3, 4, 5], [1, 1, 1, 1])
    assert iv.mean == 2.5 and iv.n == 4
    assert iv.low == pytest.approx(0.44574, abs=1e-5) and iv.high == pytest.approx(4.55426, abs=1e-5)
    assert stats.t_quantile(0.975, 3) == pytest.approx(3.18245, abs=1e-5)
    assert stats.wording(iv) == "beats" and iv.excludes_zero()


def test_one_unit_has_no_interval_and_never_wins():
    iv = stats.paired_interval([0.99], [0.5])
    assert iv.mean == pytest.approx(0.49) and math.isinf(iv.low) and math.isinf(iv.high)
    assert stats.wording(iv) == "shows no detectable difference from"


def test_wording_and_errors():
    assert stats.wording(stats.paired_interval([1, 2, 3], [3, 4, 6])) == "loses to"
    assert stats.wording(stats.paired_interval([1, 2, 3], [2, 1, 3])) == "shows no detectable difference from"
    with pytest.raises(ValueError, match="equally long"):
        stats.paired_interval([1, 2], [1])
    with pytest.raises(ValueError, match="df >= 1"):
        stats.t_quantile(0.975, 0)


def _predictions(n_runs: int, n: int, wrong: float, seed: int, labels: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    miss = torch.rand(n_runs, n, generator=g) < wrong
    return torch.where(miss, (labels + 1 + torch.randint(0, 8, (n_runs, n), generator=g)) % 10, labels)


def test_weighted_macro_f1_is_scikit_learns_on_the_images_the_weights_repeat():
    labels = torch.arange(300) % 9  # class 9 in no label: it counts only where some run predicts it
    runs = _predictions(3, 300, 0.2, 0, labels)
    counts = torch.randint(0, 3, (2, 300), generator=torch.Generator().manual_seed(1))
    got = stats.macro_f1_weighted(runs, labels, torch.cat([torch.ones(1, 300), counts.double()]), 10)
    for r in range(3):
        assert got[0, r] == pytest.approx(f1_score(labels, runs[r], average="macro"), abs=1e-12)
        for w in range(2):
            y, p = labels.repeat_interleave(counts[w]), runs[r].repeat_interleave(counts[w])
            assert got[1 + w, r] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)


def test_image_bootstrap_sees_the_uncertainty_of_the_images_that_a_runs_only_interval_cannot():
    labels = torch.arange(540) % 10
    b = labels.repeat(5, 1).clone()
    b[:, :2] = (labels[:2] + 1) % 10  # every run of b misses the same two images, which a gets right
    a = labels.repeat(5, 1)
    f1 = lambda p: stats.macro_f1_weighted(p, labels, torch.ones(1, 540), 10)[0].tolist()
    runs_only = stats.paired_interval(f1(a), f1(b))
    assert runs_only.low == runs_only.high == pytest.approx(runs_only.mean) and runs_only.excludes_zero()
    iv = stats.image_bootstrap(a, b, labels, 10)
    assert iv.mean == pytest.approx(runs_only.mean, abs=1e-12) and iv.n == 5
    # two images in 540: a resample without either (chance e^-2, 13.5%) shows no difference at all
    assert iv.low == 0.0 < iv.mean < iv.high and stats.wording(iv) == "shows no detectable difference from"
    assert stats.image_bootstrap(a, b, labels, 10) == iv  # a fixed key: the same interval every time
    assert stats.image_bootstrap(a, a, labels, 10)[:3] == (0.0, 0.0, 0.0)
    worse = _predictions(5, 540, 0.1, 2, labels)  # wrong on a tenth of the images
    clear = stats.image_bootstrap(a, worse, labels, 10)
    assert clear.low > 0.05 and stats.wording(clear) == "beats"
    other = stats.image_bootstrap(a, worse, labels, 10, key=random.key(1))
    assert other.mean == clear.mean and other.low != clear.low  # only the resampling moves with the key


def test_image_bootstrap_in_chunks_and_its_errors():
    labels = torch.arange(20_000) % 10
    a, b = _predictions(2, 20_000, 0.02, 3, labels), _predictions(2, 20_000, 0.04, 4, labels)
    iv = stats.image_bootstrap(a, b, labels, 10, resamples=500)  # image weights in three chunks of 200
    assert iv.low < iv.mean < iv.high and iv.low > 0
    with pytest.raises(ValueError, match="one shape for both contenders"):
        stats.image_bootstrap(a, b[:1], labels, 10)
    with pytest.raises(ValueError, match="one shape for both contenders"):
        stats.image_bootstrap(a, b, labels[:5], 10)
    with pytest.raises(ValueError, match="class indices in \\[0, 10\\)"):
        stats.image_bootstrap(a, b + 5, labels, 10)
    one = stats.image_bootstrap(a[:, :1], b[:, :1], labels[:1], 10)
    assert math.isinf(one.low) and math.isinf(one.high)
    one_run = stats.image_bootstrap(a[:1], b[:1], labels, 10)  # 20,000 images, but one run: no run-to-run noise seen
    assert math.isinf(one_run.low) and math.isinf(one_run.high) and one_run.n == 1 and one_run.mean > 0
