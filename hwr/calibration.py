"""Calibration and selective prediction: pure functions over logits and confidences, one definition for every
task (digits, strings) and every front end (``hwr evaluate``, ``hwr predict``, a web page).

- Temperature scaling (Guo et al. 2017): one scalar ``T > 0`` fitted on held-out logits by minimising the NLL of
  ``softmax(logits / T)``. The argmax, hence accuracy, is unchanged; only how sure the model says it is moves.
- Expected calibration error over equal-width confidence bins ``(lower, upper]`` (0 falls in the first), and the
  per-bin table a reliability diagram draws.
- The risk-coverage curve of a confidence (Geifman and El-Yaniv 2017): the error among the accepted readings as the
  threshold is lowered, its area (AURC) beside the area of a perfect ranking, and the lowest threshold whose
  accepted set meets a target error.

The rule everywhere: a reading is accepted when its confidence is ``>=`` the threshold ``P`` (``accept``), and
rejected below it (a person looks). Ties share a threshold, so every figure here is invariant to the order of
tied confidences. Inputs are never changed; tensors are made on the inputs' device; the functions that return
Python floats read the device once or a few times (the temperature search once per step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from hwr.errors import InputError

__all__ = [
    "BINS",
    "COVERAGES",
    "TEMPERATURE_BOUNDS",
    "Reliability",
    "RiskCoverage",
    "Threshold",
    "accept",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "probabilities",
    "reliability",
    "risk_coverage",
    "threshold_for_error",
]

BINS = 15  # equal-width bins of the expected calibration error (Guo et al.'s count)
COVERAGES = (1.0, 0.99, 0.95, 0.90, 0.80)  # the shares accepted that a risk-coverage table reports
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search interval of fit_temperature (a fit at a bound says so: at_bound)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 where the device has it (not MPS), for sums over many samples."""
    return x.to(torch.float32 if x.device.type == "mps" else torch.float64)


def _check_logits(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise InputError(f"logits must be a float tensor (N, C), got {getattr(logits, 'shape', type(logits))}")
    if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:1] or labels.is_floating_point():
        raise InputError(
            f"labels must be an integer tensor (N,) matching logits {tuple(logits.shape)}, got "
            f"{getattr(labels, 'shape', type(labels))}"
        )
    if logits.shape[0] == 0 or logits.shape[1] < 2:
        raise InputError(f"need at least one sample of at least two classes, got logits {tuple(logits.shape)}")
    if labels.device.type != "meta" and not 0 <= int(labels.min()) <= int(labels.max()) < logits.shape[1]:
        raise InputError(
            f"labels must lie in 0 .. {logits.shape[1] - 1}, got {int(labels.min())} .. {int(labels.max())}"
        )


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise InputError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(logits / temperature)`` over the last dimension, in the logits' dtype: the calibrated class
    probabilities of a fitted ``temperature`` (1.0: the raw softmax)."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise InputError(f"logits must be a float tensor (..., C), got {getattr(logits, 'shape', type(logits))}")
    return torch.softmax(logits / _check_temperature(temperature), dim=-1)


def _nll(z: torch.Tensor, y: torch.Tensor, t: float) -> float:
    s = z / t
    return float((torch.logsumexp(s, dim=1) - s.gather(1, y[:, None]).squeeze(1)).mean())


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of ``labels`` ``(N,)`` under ``softmax(logits / temperature)``,
    ``logits`` ``(N, C)``; summed in float64."""
    _check_logits(logits, labels)
    return _nll(_wide(logits), labels.long(), _check_temperature(temperature))


def fit_temperature(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tol: float = 1e-5,
) -> float:
    """The temperature ``T`` in ``bounds`` that minimises ``nll(logits, labels, T)``: a golden-section search on
    ``log T``, exact for this problem (the NLL is convex in ``1/T``, so it has one minimum in ``log T``) and
    deterministic (no learning rate, no random start). ``tol``: the width in ``log T`` at which the search stops.
    A validation set the model gets all right with wide margins pushes ``T`` to the lower bound: the fit then
    says the model may be sharper than any bound, not that it is calibrated there."""
    _check_logits(logits, labels)
    lo, hi = (float(b) for b in bounds)
    if not 0 < lo < hi or not math.isfinite(hi):
        raise InputError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    z, y = _wide(logits), labels.long()
    f = lambda u: _nll(z, y, math.exp(u))
    a, b = math.log(lo), math.log(hi)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:  # the minimum lies in [a, d]
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    best = min((f(a), a), (fc, c), (fd, d), (f(b), b))  # the ends too: a minimum at a bound
    return math.exp(best[1])


def _pair(confidence: torch.Tensor, correct: torch.Tensor, *, unit: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confidence (N,) float64, correct (N,) bool)`` checked: a ``(N, C)`` probability table gives its row
    maxima; ``unit`` requires confidences in ``[0, 1]`` (a calibration figure), else any finite score ranks."""
    if not isinstance(confidence, torch.Tensor) or not confidence.is_floating_point() or confidence.dim() not in (1, 2):
        raise InputError(
            f"confidence must be a float tensor (N,) or probabilities (N, C), got "
            f"{getattr(confidence, 'shape', type(confidence))}"
        )
    conf = _wide(confidence.max(dim=-1).values if confidence.dim() == 2 else confidence)
    if not isinstance(correct, torch.Tensor) or correct.shape != conf.shape:
        raise InputError(
            f"correct must be a tensor (N,) of bools matching {len(conf)} confidences, got "
            f"{getattr(correct, 'shape', type(correct))}"
        )
    if conf.numel() == 0:
        raise InputError("no readings: confidence and correct are empty; pass at least one")
    if conf.device.type != "meta":
        if not bool(torch.isfinite(conf).all()):
            raise InputError("confidence holds NaN or infinite values; check the model's outputs")
        if unit and not (float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0):
            raise InputError(
                f"confidence must lie in [0, 1] for a calibration figure, got {float(conf.min()):.4g} .. "
                f"{float(conf.max()):.4g}; pass probabilities, not logits"
            )
    return conf, correct.to(torch.bool)


class Reliability(NamedTuple):
    """A reliability table: ``edges`` ``(B + 1,)`` of the bins ``(lower, upper]``; per bin the ``count`` of
    readings, their mean ``confidence`` and their ``accuracy`` (both 0 in an empty bin)."""

    edges: torch.Tensor
    count: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor


def reliability(confidence: torch.Tensor, correct: torch.Tensor, bins: int = BINS) -> Reliability:
    """The per-bin counts, mean confidence and accuracy of ``confidence`` ``(N,)`` in ``[0, 1]`` (or class
    probabilities ``(N, C)``: their maxima) and ``correct`` ``(N,)`` over ``bins`` equal-width bins."""
    if not isinstance(bins, int) or bins < 1:
        raise InputError(f"bins must be a whole number >= 1, got {bins!r}")
    conf, ok = _pair(confidence, correct, unit=True)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=conf.dtype, device=conf.device)
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # bin b holds edges[b] < conf <= edges[b + 1]
    zeros = torch.zeros(bins, dtype=conf.dtype, device=conf.device)
    count = zeros.scatter_add(0, idx, torch.ones_like(conf))
    conf_sum = zeros.scatter_add(0, idx, conf)
    hit_sum = zeros.scatter_add(0, idx, ok.to(conf.dtype))
    n = count.clamp_min(1.0)
    return Reliability(edges, count.long(), conf_sum / n, hit_sum / n)


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = BINS) -> float:
    """ECE: the gap between accuracy and mean confidence in each of ``bins`` equal-width bins, weighted by the
    share of readings in the bin. ``confidence`` ``(N,)`` in ``[0, 1]``, or class probabilities ``(N, C)`` (their
    maxima); ``correct`` ``(N,)`` bool."""
    r = reliability(confidence, correct, bins)
    w = r.count.to(r.confidence.dtype)
    return float((w * (r.accuracy - r.confidence).abs()).sum() / w.sum())


class RiskCoverage(NamedTuple):
    """A risk-coverage curve: one point per distinct confidence, highest first. Accepting ``confidence >=
    thresholds[k]`` keeps the share ``coverage[k]`` of the readings, of which ``risk[k]`` are wrong. ``aurc``:
    the area under the curve (the mean over readings of the risk at the threshold that first accepts each);
    ``oracle_aurc``: the area of a perfect ranking of the same readings (every error below every right one), so
    ``aurc - oracle_aurc`` is what the ranking loses. ``at``: the risk at each asked coverage (the smallest
    threshold set that covers at least that share)."""

    thresholds: torch.Tensor
    coverage: torch.Tensor
    risk: torch.Tensor
    aurc: float
    oracle_aurc: float
    at: dict[float, float]


def _oracle_aurc(n: int, errors: int, like: torch.Tensor) -> float:
    if errors == 0:
        return 0.0
    k = torch.arange(n - errors + 1, n + 1, dtype=like.dtype, device=like.device)
    return float(((k - (n - errors)) / k).sum() / n)


def risk_coverage(
    confidence: torch.Tensor, correct: torch.Tensor, coverages: Sequence[float] = COVERAGES
) -> RiskCoverage:
    """The risk-coverage curve of any finite ``confidence`` ``(N,)`` (only its order matters: probabilities,
    log-scores; class probabilities ``(N, C)`` give their maxima) against ``correct`` ``(N,)``, with the risk at
    each of ``coverages`` (shares in ``(0, 1]``)."""
    if any(not 0.0 < float(c) <= 1.0 for c in coverages):
        raise InputError(f"coverages must lie in (0, 1], got {tuple(coverages)}")
    conf, ok = _pair(confidence, correct, unit=False)
    n = conf.numel()
    order = torch.sort(conf, descending=True, stable=True).indices
    sorted_conf, wrong = conf[order], (~ok[order]).to(conf.dtype)
    last = torch.ones(n, dtype=torch.bool, device=conf.device)  # the last reading of each tie group
    last[:-1] = sorted_conf[:-1] != sorted_conf[1:]
    ends = last.nonzero().squeeze(1)
    accepted = (ends + 1).to(conf.dtype)
    risk = wrong.cumsum(0)[ends] / accepted
    group = torch.cat([torch.zeros(1, dtype=torch.long, device=conf.device), last[:-1].long()]).cumsum(0)
    aurc = float(risk[group].mean())
    coverage = accepted / n
    at = {}
    for c in coverages:  # the first threshold whose coverage reaches c (rounding: a hair below c counts)
        k = int(torch.searchsorted(coverage, torch.tensor(float(c) - 1e-12, dtype=conf.dtype, device=conf.device)))
        at[float(c)] = float(risk[min(k, len(risk) - 1)])
    oracle = _oracle_aurc(n, int(wrong.sum()), conf)
    return RiskCoverage(sorted_conf[ends], coverage, risk, aurc, oracle, at)


class Threshold(NamedTuple):
    """A reject threshold: accept ``confidence >= threshold``; on the data it was chosen on it keeps the share
    ``coverage`` (``accepted`` readings) at the error ``error``."""

    threshold: float
    coverage: float
    error: float
    accepted: int


def threshold_for_error(confidence: torch.Tensor, correct: torch.Tensor, target_error: float) -> Threshold:
    """The lowest threshold ``P`` (the most readings kept) whose accepted set ``confidence >= P`` has an error
    ``<= target_error`` on this data (``confidence`` ``(N,)``, ``correct`` ``(N,)``). With no error at all,
    ``P`` is the lowest confidence (everything accepted). Raises ``InputError`` for a target outside ``(0, 1)``
    and, naming the lowest error any threshold reaches, when none reaches the target."""
    target = float(target_error)
    if not 0.0 < target < 1.0:
        raise InputError(f"target error must lie strictly between 0 and 1, got {target_error!r}; e.g. 0.01 for 1%")
    curve = risk_coverage(confidence, correct, coverages=())
    ok = (curve.risk <= target + 1e-12).nonzero().squeeze(1)
    n = int(confidence.shape[0])
    if ok.numel() == 0:
        k = int(curve.risk.argmin())
        raise InputError(
            f"no threshold reaches error {target:.4g} on these {n} readings: the lowest error any threshold "
            f"reaches is {float(curve.risk[k]):.4g} (accepting {float(curve.coverage[k]):.1%}, confidence >= "
            f"{float(curve.thresholds[k]):.6g}); choose a target error of at least that"
        )
    k = int(ok[-1])
    coverage = float(curve.coverage[k])
    return Threshold(float(curve.thresholds[k]), coverage, float(curve.risk[k]), round(coverage * n))


def accept(confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(N,)`` bool: the readings a threshold keeps (``confidence >= threshold``); the rest go to a person."""
    return confidence >= threshold
