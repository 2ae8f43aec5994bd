"""Paired comparisons of contenders: the mean per-unit difference and its 95% interval (Student t over the
paired units), and the words a report may use about it.

A *unit* is what two contenders share: the same seed (and, where an evaluation varies them, the same long-tail
draw, the same pretrained source) and the same test images. Differences are taken unit by unit, so the
variation the contenders share (a hard draw, a weak source, a lucky seed) cancels; the interval treats the
units as the sample (it resamples nothing: a t interval on ``n`` paired differences, ``n - 1`` degrees of
freedom). With one unit there is no interval and nothing is ever said to win.

That interval holds the test images fixed: it says how sure a difference is on these images, not on the next
ones. ``image_bootstrap`` resamples both, the paired units and the test images (the same resampled images for
both contenders and every unit), from each run's prediction of every image: a difference of two or three images
in a few hundred, which run-level intervals call certain, is then as uncertain as it is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import NamedTuple

import scipy.stats
import torch

from hwr import random

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "Interval",
    "image_bootstrap",
    "macro_f1_weighted",
    "paired_interval",
    "t_quantile",
    "wording",
]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20_261_207  # fixed: the same predictions always give the same interval


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


def wording(interval: Interval, *others: Interval) -> str:
    """``beats`` only where the interval (and every one of ``others``: each estimate of the same gain must agree)
    lies above zero, ``loses to`` where they all lie below, else ``no detectable difference from``."""
    if others:
        low, high = min(i.low for i in (interval, *others)), max(i.high for i in (interval, *others))
        interval = interval._replace(low=low, high=high)
    if interval.low > 0:
        return "beats"
    if interval.high < 0:
        return "loses to"
    return "shows no detectable difference from"


def macro_f1_weighted(
    predicted: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, classes: int
) -> torch.Tensor:
    """Macro-F1 ``(W, R)`` of each of ``R`` runs' predictions ``(R, N)`` of ``N`` images with true ``labels``
    ``(N,)``, under each of ``W`` rows of image weights ``(W, N)`` (a bootstrap's counts; all ones: the plain figure).
    As ``hwr.metrics.summarize``: the mean F1 over the classes that occur in the labels or the predictions."""
    pred = torch.nn.functional.one_hot(predicted, classes).double()  # (R, N, C)
    truth = torch.nn.functional.one_hot(labels, classes).double()  # (N, C)
    w = weights.double()
    tp = torch.einsum("wn,rnc->wrc", w, pred * truth[None])
    said = torch.einsum("wn,rnc->wrc", w, pred)
    support = (w @ truth)[:, None, :]  # (W, 1, C)
    both = said + support
    f1 = torch.where(both > 0, 2 * tp / both.clamp_min(1e-300), torch.zeros_like(tp))
    seen = (both > 0).double()
    return (f1 * seen).sum(-1) / seen.sum(-1).clamp_min(1)


def _check_predictions(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
    if a.ndim != 2 or a.shape != b.shape or labels.shape != (a.shape[1],):
        raise ValueError(
            f"image_bootstrap needs predictions (runs, images) of one shape for both contenders and labels "
            f"(images,), got {tuple(a.shape)}, {tuple(b.shape)} and {tuple(labels.shape)}"
        )
    for name, t in (("predictions", torch.cat([a.flatten(), b.flatten()])), ("labels", labels)):
        if t.numel() and (t.min() < 0 or t.max() >= classes):
            raise ValueError(
                f"image_bootstrap: {name} must be class indices in [0, {classes}), got {t.min()}..{t.max()}"
            )


def image_bootstrap(
    a: torch.Tensor,
    b: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    *,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    key: random.Key | None = None,
) -> Interval:
    """The mean over paired runs of macro-F1(``a[i]``) - macro-F1(``b[i]``) (predictions ``(runs, images)`` of the
    same test images, run i of one paired with run i of the other) and its ``level`` percentile interval from a
    paired bootstrap that draws, ``resamples`` times, the runs with replacement and the images with replacement
    (one draw of images for both contenders and all runs of a resample). Deterministic: a fixed key. Unbounded
    for fewer than 2 runs or images: one run says nothing about the next run's noise, however many images."""
    _check_predictions(a, b, labels, classes)
    runs, n = a.shape
    ones = torch.ones(1, n)
    diffs = macro_f1_weighted(a, labels, ones, classes) - macro_f1_weighted(b, labels, ones, classes)
    mean = float(diffs.mean())
    if n < 2 or runs < 2:
        return Interval(mean, -math.inf, math.inf, runs, level)
    k_runs, k_images = random.split(key if key is not None else random.key(BOOTSTRAP_SEED))
    which = random.randint(k_runs, (resamples, runs), 0, runs)
    out, chunk = [], max(1, 4_000_000 // n)  # image weights of at most ~4M cells at a time
    for start in range(0, resamples, chunk):
        count = min(resamples, start + chunk) - start
        drawn = random.randint(random.fold_in(k_images, start), (count, n), 0, n)
        w = torch.zeros(count, n, dtype=torch.float64).scatter_add_(1, drawn, torch.ones(count, n, dtype=torch.float64))
        d = macro_f1_weighted(a, labels, w, classes) - macro_f1_weighted(b, labels, w, classes)  # (count, runs)
        out.append(d.gather(1, which[start : start + count]).mean(1))
    q = torch.quantile(torch.cat(out), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return Interval(mean, float(q[0]), float(q[1]), runs, level)
