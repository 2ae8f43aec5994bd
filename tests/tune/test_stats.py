"""hwr.tune.stats: the paired t interval against a hand-computed case, one unit, and the wording."""

import math

import pytest

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
