"""hwr.decode: greedy and prefix beam search on hand-checked cases; greedy compiles and stays on its device;
the beam search constrained by a reading format finds the labelling that a brute force over every accepted
labelling (scored by the CTC forward algorithm) finds, and reproduces the free beam search under ``.*``."""

import itertools
import math
import re

import pytest
import torch

from hwr import decode, pattern
from hwr.ctc import ctc_loss

BLANK = 0


def _frames(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs).log()[None]  # (1, T, C) log-probabilities


def test_greedy_merges_repeats_and_drops_blanks():
    # best path: a a - a b b - ; two a's (a blank separates them), one b
    p = [
        [0.1, 0.8, 0.1],
        [0.2, 0.7, 0.1],
        [0.9, 0.05, 0.05],
        [0.3, 0.6, 0.1],
        [0.1, 0.2, 0.7],
        [0.1, 0.1, 0.8],
        [0.8, 0.1, 0.1],
    ]
    d = decode.greedy(_frames(p), blank=BLANK)
    assert decode.to_lists(d.labels, d.lengths) == [[1, 1, 2]]
    assert d.labels.shape == (1, 7) and (d.labels[0, 3:] == decode.PAD).all()
    torch.testing.assert_close(d.confidence[0, :3], torch.tensor([0.8, 0.6, 0.8]))
    torch.testing.assert_close(d.scores[0], torch.tensor([0.8, 0.7, 0.9, 0.6, 0.7, 0.8, 0.8]).log().sum())


def test_greedy_batched_with_lengths():
    p = torch.tensor([[0.1, 0.9, 0.0], [0.1, 0.0, 0.9], [0.1, 0.9, 0.0]]).clamp_min(1e-6).log()  # a b a
    x = torch.stack([p, p, p])
    d = decode.greedy(x, torch.tensor([3, 2, 0]), blank=BLANK)
    assert decode.to_lists(d.labels, d.lengths) == [[1, 2, 1], [1, 2], []]
    assert d.lengths.tolist() == [3, 2, 0]
    assert (d.confidence[2] == 0).all()


def test_greedy_blank_last_and_meta():
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.9, 0.1]]).log()[None]  # blank is the last class here: 0 _ 0
    d = decode.greedy(p, blank=1)
    assert decode.to_lists(d.labels, d.lengths) == [[0, 0]]
    m = decode.greedy(p.to("meta"), torch.tensor([3], device="meta"), blank=1)
    assert all(t.device.type == "meta" for t in m)


def test_beam_finds_the_likelier_prefix_that_greedy_misses():
    # two frames of P(blank)=0.6, P(a)=0.4: best path "--" (0.36), but "a" sums a-, -a, aa = 0.64
    p = _frames([[0.6, 0.4], [0.6, 0.4]])
    g = decode.greedy(p, blank=BLANK)
    assert decode.to_lists(g.labels, g.lengths) == [[]]
    b = decode.beam_search(p, blank=BLANK, beam=4, prune=0.0)
    assert decode.to_lists(b.labels, b.lengths) == [[1]]
    assert math.isclose(float(b.scores[0]), math.log(0.64), rel_tol=1e-6)


def test_beam_repeats_need_a_blank():
    # a a with certainty collapses to "a"; a - a gives "a a"
    p = torch.tensor([[1e-9, 1.0], [1e-9, 1.0]]).log()[None]
    assert decode.to_lists(*decode.beam_search(p, blank=BLANK, prune=0.0)[:2]) == [[1]]
    q = torch.tensor([[1e-9, 1.0], [1.0, 1e-9], [1e-9, 1.0]]).log()[None]
    assert decode.to_lists(*decode.beam_search(q, blank=BLANK, prune=0.0)[:2]) == [[1, 1]]


def test_beam_agrees_with_greedy_on_peaked_scores_and_with_exhaustive_search():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 3, generator=g) * 4  # peaked
    lengths = torch.tensor([5, 4, 5, 3, 5, 1])
    b = decode.beam_search(x, lengths, blank=BLANK, beam=50, prune=0.0)
    # exhaustive: the probability of every label sequence over all 3**T paths
    logp = torch.log_softmax(x.double(), -1)
    for i in range(6):
        totals: dict[tuple, float] = {}
        t = int(lengths[i])
        for k in range(3**t):
            path = [(k // 3**j) % 3 for j in range(t)]
            lab, prev = [], None
            for c in path:
                if c != BLANK and c != prev:
                    lab.append(c)
                prev = c
            totals[tuple(lab)] = totals.get(tuple(lab), 0.0) + math.exp(
                sum(float(logp[i, j, c]) for j, c in enumerate(path))
            )
        best = max(totals, key=totals.get)
        assert decode.to_lists(b.labels[i : i + 1], b.lengths[i : i + 1]) == [list(best)]
        assert math.isclose(float(b.scores[i]), math.log(totals[best]), rel_tol=1e-5)


def test_greedy_compiles_without_breaks():
    from torch._dynamo.utils import counters

    x = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(1))
    counters.clear()
    fn = torch.compile(lambda v, n: decode.greedy(v, n, blank=3), fullgraph=True, dynamic=False)
    got = fn(x, torch.tensor([6, 5, 2]))
    want = decode.greedy(x, torch.tensor([6, 5, 2]), blank=3)
    assert torch.equal(got.labels, want.labels) and torch.equal(got.lengths, want.lengths)
    torch.testing.assert_close(got.confidence, want.confidence)
    assert not counters["graph_break"]


# ---------------------------------------------------------------------------------------------- constrained


def _brute_force(logp: torch.Tensor, alphabet: str, text: str) -> tuple[tuple[int, ...], float]:
    """The accepted labelling of highest probability under ``logp`` ``(T, C)`` (blank last): every labelling of
    up to T labels that ``re.fullmatch(text)`` accepts, scored by ``hwr.ctc.ctc_loss``; ``((), -inf)`` if none
    fits in T frames."""
    t, k = logp.shape[0], len(alphabet)
    cands = [p for n in range(t + 1) for p in itertools.product(range(k), repeat=n)]
    cands = [p for p in cands if re.fullmatch(text, "".join(alphabet[i] for i in p))]
    if not cands or t == 0:  # no frames: the empty labelling, with probability 1, if it is accepted
        return (), (0.0 if cands else -math.inf)
    targets = torch.tensor([list(p) + [0] * (t - len(p)) for p in cands], dtype=torch.int64)
    loss = ctc_loss(
        logp[None].expand(len(cands), -1, -1),
        targets,
        torch.full((len(cands),), t),
        torch.tensor([len(p) for p in cands]),
        blank=k,
        reduction="none",
    )
    i = int(loss.argmin())
    return (cands[i], -float(loss[i])) if math.isfinite(float(loss[i])) else ((), -math.inf)


CASES = [("01", "0*"), ("01", "[01]{2}"), ("01", "1?0+"), ("01", ".{3}|."), ("01", "(01)+"), ("01", r"\d{2,3}"),
         ("0-1", "0-1"), ("0-1", r"\d(-\d)?"), ("0-1", "[^-]{4}"), ("012", "2?(10|0)*")]  # fmt: skip


@pytest.mark.parametrize(("alphabet", "text"), CASES)
def test_constrained_equals_brute_force(alphabet, text):
    fsa = pattern.automaton(text, alphabet)
    g = torch.Generator().manual_seed(len(text) * 31 + len(alphabet))
    for t in range(7):
        x = torch.randn(3, t, len(alphabet) + 1, generator=g, dtype=torch.float64) * 2.5
        d = decode.constrained_beam_search(x, blank=len(alphabet), automaton=fsa, beam=10_000, prune=0.0)
        for i in range(3):
            best, score = _brute_force(torch.log_softmax(x[i], -1), alphabet, text)
            got = decode.to_lists(d.labels[i : i + 1], d.lengths[i : i + 1])[0]
            assert tuple(got) == best, (text, t, i, got, best)
            if math.isinf(score):
                assert float(d.scores[i]) == -math.inf and float(d.confidence[i].sum()) == 0.0
            else:
                assert math.isclose(float(d.scores[i]), score, rel_tol=1e-6, abs_tol=1e-6), (text, t, i)  # float32 out
                assert fsa.accepts(got)


def test_unconstrained_pattern_reproduces_beam_search():
    x = torch.randn(6, 9, 4, generator=torch.Generator().manual_seed(2)) * 3
    lengths = torch.tensor([9, 8, 5, 9, 1, 0])
    fsa = pattern.automaton(".*", "012")
    for beam, prune in [(1, 1e-4), (3, 1e-3), (8, 0.0)]:
        want = decode.beam_search(x, lengths, blank=3, beam=beam, prune=prune)
        got = decode.constrained_beam_search(x, lengths, blank=3, automaton=fsa, beam=beam, prune=prune)
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def test_constrained_is_pure_and_deterministic():
    x = torch.randn(4, 7, 4, generator=torch.Generator().manual_seed(3))
    before = x.clone()
    fsa = pattern.automaton(r"\d{3}", "012")
    a = decode.constrained_beam_search(x, blank=3, automaton=fsa)
    b = decode.constrained_beam_search(x, blank=3, automaton=fsa)
    assert torch.equal(x, before)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert (a.lengths == 3).all() and a.labels.shape == (4, 7)


def test_a_length_the_frames_cannot_hold_scores_minus_inf():
    x = torch.randn(2, 12, 4, generator=torch.Generator().manual_seed(4))
    fsa = pattern.automaton(r"\d{9}", "012")
    d = decode.constrained_beam_search(x, torch.tensor([12, 6]), blank=3, automaton=fsa)
    assert int(d.lengths[0]) == 9 and math.isfinite(float(d.scores[0]))
    assert int(d.lengths[1]) == 0 and float(d.scores[1]) == -math.inf
    assert (d.labels[1] == decode.PAD).all() and (d.confidence[1] == 0).all()


def test_length_constraint_recovers_a_merged_repeat():
    # greedy and the free beam read "1": three frames of '1' with a weak blank in the middle; \d{2} reads "11"
    p = torch.tensor([[0.05, 0.9, 0.05], [0.05, 0.55, 0.4], [0.05, 0.9, 0.05]]).log()[None]
    free = decode.beam_search(p, blank=2, prune=0.0)
    assert decode.to_lists(free.labels, free.lengths) == [[1]]
    d = decode.constrained_beam_search(p, blank=2, automaton=pattern.automaton(r"\d{2}", "01"))
    assert decode.to_lists(d.labels, d.lengths) == [[1, 1]]
    assert math.isclose(float(d.scores[0]), math.log(0.9 * 0.4 * 0.9), rel_tol=1e-5)


def test_an_improbable_length_is_found_past_the_pruning():
    # a confident "0" then blanks: only labels under the 1e-4 pruning threshold make two characters
    p = torch.tensor([[1 - 2e-6, 1e-6, 1e-6], [1e-6, 1e-6, 1 - 2e-6], [1e-6, 2e-6, 1 - 3e-6]], dtype=torch.float64)
    x = p.log()[None]
    d = decode.constrained_beam_search(x, blank=2, automaton=pattern.automaton(r"\d{2}", "01"))
    best, score = _brute_force(x[0], "01", r"\d{2}")
    assert decode.to_lists(d.labels, d.lengths) == [list(best)] == [[0, 1]]
    assert math.isclose(float(d.scores[0]), score, rel_tol=1e-5)


def test_blank_must_follow_the_automatons_classes():
    fsa = pattern.automaton(r"\d", "012")
    with pytest.raises(ValueError, match="blank"):
        decode.constrained_beam_search(torch.zeros(1, 3, 4), blank=0, automaton=fsa)
    with pytest.raises(ValueError, match="blank"):
        decode.constrained_beam_search(torch.zeros(1, 3, 3), blank=2, automaton=fsa)
