"""Paired comparisons of contenders: the mean per-unit difference and its 95% interval (Student t over the
paired units), and the words a report may use about it.

A *unit* is what two contenders share: the same seed (and, where an evaluation varies them, the same long-tail
draw, the same pretrained source) and the same test images. Differences are taken unit by unit, so the
variation the contenders share (a hard draw, a weak source, a lucky seed) cancels; the interval treats the
units as the sample (it resamples nothing: a t interval on ``n`` paired differences, ``n - 1`` degrees of
freedom). With one unit there is no interval and nothing is ever said to win.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import NamedTuple

import scipy.stats

__all__ = ["Interval", "paired_interval", "t_quantile", "wording"]


class Interval(NamedTuple):
    """``mean`` of the paired differences ``a - b`` with its ``level`` interval ``[low, high]`` over ``n`` units
    (``low``/``high`` are -inf/inf when ``n < 2``)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (scipy's)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    return float(scipy.stats.t.ppf(p, df))


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of ``a[i] - b[i]`` over the paired units and its ``level`` t interval."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_interval needs two equally long, non-empty sequences, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    mean, n = statistics.fmean(diffs), len(diffs)
    if n < 2:
        return Interval(mean, -math.inf, math.inf, n, level)
    half = t_quantile(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def wording(interval: Interval) -> str:
    """``beats`` only where the interval lies above zero, ``loses to`` where it lies below, else ``no detectable
    difference from``."""
    if interval.low > 0:
        return "beats"
    if interval.high < 0:
        return "loses to"
    return "shows no detectable difference from"
