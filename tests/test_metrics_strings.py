"""hwr.metrics for strings: batched edit distance against a reference DP, CER and string accuracy as sums."""

import torch

from hwr import metrics


def _levenshtein(a: list[int], b: list[int]) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def _pad(seqs: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.full((len(seqs), width), -1, dtype=torch.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
    return out, torch.tensor([len(s) for s in seqs])


def test_edit_distance_hand_checked_and_random():
    hyp = [[1, 2, 3], [], [1, 2], [4, 4, 4, 4], [1, 3, 2], [5]]
    ref = [[1, 2, 3], [1, 2], [], [4], [1, 2, 3], [6]]
    h, hl = _pad(hyp, 5)
    r, rl = _pad(ref, 4)
    assert metrics.edit_distance(h, hl, r, rl).tolist() == [0, 2, 2, 3, 2, 1]
    g = torch.Generator().manual_seed(0)
    hyp = [
        torch.randint(0, 4, (int(torch.randint(0, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(200)
    ]
    ref = [
        torch.randint(0, 4, (int(torch.randint(0, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(200)
    ]
    got = metrics.edit_distance(*_pad(hyp, 10), *_pad(ref, 8)).tolist()
    assert got == [_levenshtein(a, b) for a, b in zip(hyp, ref)]


def test_string_sums_and_summary_divide_once():
    hyp = [[1, 2, 3], [1, 2], [7, 7, 7, 7, 7], [3]]
    ref = [[1, 2, 3], [1, 3], [7, 7, 7, 7, 7], [3, 3]]
    h, hl = _pad(hyp, 6)
    r, rl = _pad(ref, 5)
    whole = metrics.string_sums(h, hl, r, rl, max_length=8)
    parts = None
    for i in range(4):  # batch by batch
        parts = metrics.accumulate(
            parts, metrics.string_sums(h[i : i + 1], hl[i : i + 1], r[i : i + 1], rl[i : i + 1], 8)
        )
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    s = metrics.summarize_strings(parts)
    assert s["count"] == 4 and s["chars"] == 12
    assert s["cer"] == 2 / 12 and s["string_accuracy"] == 0.5
    rows = {row["length"]: row for row in s["by_length"]}
    assert sorted(rows) == [2, 3, 5]
    assert rows[2] == {"length": 2, "count": 2, "cer": 0.5, "string_accuracy": 0.0}
    assert rows[5]["string_accuracy"] == 1.0 and rows[3]["cer"] == 0.0


def test_string_sums_mask_drops_padding():
    h, hl = _pad([[1], [2]], 2)
    r, rl = _pad([[1], [1]], 2)
    s = metrics.summarize_strings(metrics.string_sums(h, hl, r, rl, 4, mask=torch.tensor([True, False])))
    assert s["count"] == 1 and s["cer"] == 0.0 and s["string_accuracy"] == 1.0
