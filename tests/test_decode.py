"""hwr.decode: greedy and prefix beam search on hand-checked cases; greedy compiles and stays on its device."""

import math

import torch

from hwr import decode

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
    fn = torch.compile(lambda v, n: decode.greedy(v, n, blank=3), fullgraph=True)
    got = fn(x, torch.tensor([6, 5, 2]))
    want = decode.greedy(x, torch.tensor([6, 5, 2]), blank=3)
    assert torch.equal(got.labels, want.labels) and torch.equal(got.lengths, want.lengths)
    torch.testing.assert_close(got.confidence, want.confidence)
    assert not counters["graph_break"]
