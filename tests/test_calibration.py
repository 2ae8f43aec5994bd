"""hwr.calibration: ECE, NLL and AURC against hand-computed cases and an independent numpy implementation; the
temperature fit recovers a known temperature; thresholds for a target error; purity, determinism, the device of
the results, and every bad input named."""

import math

import numpy as np
import pytest
import torch

from hwr import calibration as cal
from hwr.errors import InputError

# ------------------------------------------------------------------------------------------ numpy references


def np_ece(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    idx = np.digitize(conf, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True)  # (lower, upper]
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return total


def np_aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    """The mean over readings of the error among those at least as confident (the threshold that accepts it)."""
    return float(np.mean([(~correct[conf >= c]).mean() for c in conf]))


def np_nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    s = logits / t
    m = s.max(1, keepdims=True)
    lse = (m + np.log(np.exp(s - m).sum(1, keepdims=True)))[:, 0]
    return float(np.mean(lse - s[np.arange(len(labels)), labels]))


def _scores(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g, dtype=torch.float64)
    correct = torch.rand(n, generator=g, dtype=torch.float64) < conf  # right about as often as it says
    return conf, correct


# ------------------------------------------------------------------------------------------ hand-computed


def test_ece_by_hand():
    conf = torch.tensor([0.85, 0.85, 0.55, 0.55])
    correct = torch.tensor([True, False, True, True])
    # bin (0.8, 0.9]: accuracy 0.5, confidence 0.85; bin (0.5, 0.6]: accuracy 1, confidence 0.55
    assert cal.expected_calibration_error(conf, correct, bins=10) == pytest.approx(0.5 * 0.35 + 0.5 * 0.45)
    r = cal.reliability(conf, correct, bins=10)
    assert r.count.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    assert r.accuracy[8].item() == pytest.approx(0.5) and r.confidence[5].item() == pytest.approx(0.55)
    assert r.edges.shape == (11,)


def test_ece_takes_probabilities_and_bins_zero_and_one():
    probs = torch.tensor([[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    correct = torch.tensor([True, True, False])
    assert cal.expected_calibration_error(probs, correct, bins=2) == pytest.approx(
        cal.expected_calibration_error(torch.tensor([0.8, 1.0, 0.5]), correct, bins=2)
    )
    r = cal.reliability(torch.tensor([0.0, 1.0]), torch.tensor([False, True]), bins=4)
    assert r.count.tolist() == [1, 0, 0, 1]  # 0 in the first bin, 1 in the last


def test_aurc_and_risk_at_coverage_by_hand():
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6])
    correct = torch.tensor([True, False, True, True])
    rc = cal.risk_coverage(conf, correct, coverages=(1.0, 0.8, 0.5, 0.25))
    assert rc.risk.tolist() == pytest.approx([0, 1 / 2, 1 / 3, 1 / 4])
    assert rc.coverage.tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rc.aurc == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert rc.oracle_aurc == pytest.approx(1 / 4 / 4)  # the error ranked last: only the full set holds it
    assert rc.at == pytest.approx({1.0: 0.25, 0.8: 0.25, 0.5: 0.5, 0.25: 0.0})  # 80%: the first set covering it


def test_ties_share_a_threshold_whatever_their_order():
    conf = torch.tensor([0.9, 0.9, 0.5], dtype=torch.float64)
    a = cal.risk_coverage(conf, torch.tensor([True, False, True]))
    b = cal.risk_coverage(conf, torch.tensor([False, True, True]))
    assert a.aurc == b.aurc == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert a.thresholds.tolist() == [0.9, 0.5] and a.risk.tolist() == pytest.approx([0.5, 1 / 3])


def test_threshold_for_error_by_hand():
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64)
    correct = torch.tensor([True, False, True, True])
    assert cal.threshold_for_error(conf, correct, 0.3) == (0.6, 1.0, 0.25, 4)  # the lowest P that meets it
    t = cal.threshold_for_error(conf, correct, 0.2)
    assert t == (0.9, 0.25, 0.0, 1)
    assert cal.accept(conf, t.threshold).tolist() == [True, False, False, False]
    every = cal.threshold_for_error(conf, torch.ones(4, dtype=torch.bool), 0.01)
    assert every.threshold == 0.6 and every.coverage == 1.0  # no error: everything accepted


def test_nll_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    assert cal.nll(logits, torch.tensor([1])) == pytest.approx(-math.log(0.75))
    assert cal.nll(logits * 2, torch.tensor([1]), temperature=2.0) == pytest.approx(-math.log(0.75))


# ------------------------------------------------------------------------------------------ against numpy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_aurc_nll_match_numpy(seed):
    conf, correct = _scores(seed=seed)
    conf = torch.cat([conf, conf[:20]])  # ties
    correct = torch.cat([correct, ~correct[:20]])
    c, k = conf.numpy(), correct.numpy()
    for bins in (1, 7, 15):
        assert cal.expected_calibration_error(conf, correct, bins) == pytest.approx(np_ece(c, k, bins), abs=1e-12)
    assert cal.risk_coverage(conf, correct).aurc == pytest.approx(np_aurc(c, k), abs=1e-12)
    g = torch.Generator().manual_seed(seed)
    logits, labels = torch.randn(50, 7, generator=g) * 3, torch.randint(0, 7, (50,), generator=g)
    for t in (0.3, 1.0, 2.5):
        assert cal.nll(logits, labels, t) == pytest.approx(np_nll(logits.double().numpy(), labels.numpy(), t))
        want = torch.nn.functional.cross_entropy(logits.double() / t, labels).item()
        assert cal.nll(logits, labels, t) == pytest.approx(want, rel=1e-12)


def test_threshold_matches_a_brute_force_scan():
    conf, correct = _scores(200, seed=3)
    for target in (0.05, 0.1, 0.3):
        t = cal.threshold_for_error(conf, correct, target)
        scan = [p for p in sorted(set(conf.tolist())) if (~correct[conf >= p]).double().mean() <= target]
        assert t.threshold == min(scan)
        kept = conf >= t.threshold
        assert t.accepted == int(kept.sum()) and t.error == pytest.approx((~correct[kept]).double().mean().item())


# ------------------------------------------------------------------------------------------ temperature


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(t_true):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8_000, 10, generator=g) * 2
    labels = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)  # calibrated at T = t_true
    logits = t_true * z
    t = cal.fit_temperature(logits, labels)
    assert t == pytest.approx(t_true, rel=0.05)
    assert cal.nll(logits, labels, t) <= min(cal.nll(logits, labels, s) for s in (t * 0.95, t * 1.05, 1.0))
    probs = cal.probabilities(logits, t)
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))  # accuracy unchanged
    before = cal.expected_calibration_error(cal.probabilities(logits), probs.argmax(-1) == labels)
    after = cal.expected_calibration_error(probs, probs.argmax(-1) == labels)
    assert after < 0.02 < before


def test_fit_temperature_is_pure_and_deterministic():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(500, 5, generator=g) * 4, torch.randint(0, 5, (500,), generator=g)
    kept = (logits.clone(), labels.clone())
    a, b = cal.fit_temperature(logits, labels), cal.fit_temperature(logits, labels)
    assert a == b and torch.equal(logits, kept[0]) and torch.equal(labels, kept[1])


def test_a_perfectly_separated_set_fits_at_the_lower_bound():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    assert cal.fit_temperature(logits, torch.tensor([0, 1])) == pytest.approx(cal.TEMPERATURE_BOUNDS[0], rel=1e-4)


# ------------------------------------------------------------------------------------------ purity, devices


def test_functions_do_not_change_their_inputs():
    conf, correct = _scores()
    kept = (conf.clone(), correct.clone())
    cal.reliability(conf, correct)
    cal.expected_calibration_error(conf, correct)
    cal.risk_coverage(conf, correct)
    cal.threshold_for_error(conf, correct, 0.2)
    assert torch.equal(conf, kept[0]) and torch.equal(correct, kept[1])
    a, b = cal.risk_coverage(conf, correct), cal.risk_coverage(conf, correct)
    assert a.aurc == b.aurc and torch.equal(a.risk, b.risk)


def test_results_live_on_the_inputs_device():
    conf, correct = torch.zeros(4, device="meta"), torch.zeros(4, dtype=torch.bool, device="meta")
    assert cal.accept(conf, 0.5).device.type == "meta"
    r = cal.reliability(conf, correct)
    assert {t.device.type for t in r} == {"meta"}


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cal.expected_calibration_error(torch.tensor([0.5, 0.6]), torch.tensor([True])), "matching 2"),
        (lambda: cal.expected_calibration_error(torch.tensor([]), torch.tensor([], dtype=torch.bool)), "empty"),
        (lambda: cal.expected_calibration_error(torch.tensor([1.5]), torch.tensor([True])), r"\[0, 1\]"),
        (lambda: cal.expected_calibration_error(torch.tensor([0.5]), torch.tensor([True]), bins=0), "bins"),
        (lambda: cal.risk_coverage(torch.tensor([float("nan")]), torch.tensor([True])), "NaN"),
        (lambda: cal.risk_coverage(torch.tensor([0.5]), torch.tensor([True]), coverages=(0.0,)), "coverages"),
        (lambda: cal.risk_coverage(torch.tensor([1, 2]), torch.tensor([True, True])), "float tensor"),
        (lambda: cal.threshold_for_error(torch.tensor([0.5]), torch.tensor([True]), 0.0), "between 0 and 1"),
        (lambda: cal.threshold_for_error(torch.tensor([0.5]), torch.tensor([True]), 1.0), "between 0 and 1"),
        (lambda: cal.nll(torch.zeros(3), torch.zeros(3, dtype=torch.long)), r"\(N, C\)"),
        (lambda: cal.nll(torch.zeros(2, 3), torch.tensor([0, 3])), "0 .. 2"),
        (lambda: cal.nll(torch.zeros(2, 3), torch.tensor([0.0, 1.0])), "integer"),
        (lambda: cal.nll(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)), "at least one"),
        (lambda: cal.probabilities(torch.zeros(2, 3), 0.0), "temperature"),
        (lambda: cal.fit_temperature(torch.zeros(2, 3), torch.tensor([0, 1]), bounds=(2.0, 1.0)), "bounds"),
    ],
)
def test_bad_inputs_are_named(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_an_unreachable_target_names_the_best_error():
    conf = torch.tensor([0.9, 0.8, 0.7])
    correct = torch.tensor([False, True, False])
    with pytest.raises(InputError, match=r"lowest error any threshold reaches is 0\.5 \(accepting 66\.7%"):
        cal.threshold_for_error(conf, correct, 0.1)
