"""Decoding per-frame class scores ``(B, T, C)`` of a CTC model into label sequences.

- ``greedy``: the best class per frame, repeats merged, blanks dropped; pure tensor ops with fixed shapes (no
  host sync, compiles), with each character's confidence (the highest probability over the frames of its run).
- ``beam_search``: CTC prefix beam search (Hannun et al. 2014), which sums over the alignments of each prefix
  instead of following the single best path; exact for ``prune=0``, run per sample on the CPU in float64.
- ``constrained_beam_search``: the same search kept on the paths of a reading format's automaton
  (``hwr.pattern``): the most probable labelling the pattern accepts (``--length 5``, ``\\d{5}(-\\d{4})?``).

All three return a ``Decoded``: labels padded with ``PAD`` to a fixed width, their lengths, and a score per string.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from hwr.pattern import Automaton

__all__ = ["PAD", "Decoded", "beam_search", "constrained_beam_search", "greedy", "to_lists"]

PAD = -1  # label padding value, in decoded sequences and in data targets


class Decoded(NamedTuple):
    """``labels`` ``(B, L)`` int64 padded with ``PAD``; ``lengths`` ``(B,)``; ``scores`` ``(B,)`` the log-probability
    of the best path (greedy) or of the prefix (beam); ``confidence`` ``(B, L)`` per character in ``[0, 1]``
    (0 on padding)."""

    labels: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    confidence: torch.Tensor


def _log_probs(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 3:
        raise ValueError(f"decoding takes scores (B, T, C), got shape {tuple(x.shape)}")
    return F.log_softmax(x.float(), dim=-1)


def _lengths(lengths: torch.Tensor | None, b: int, t: int, device: torch.device) -> torch.Tensor:
    if lengths is None:
        return torch.full((b,), t, dtype=torch.int64, device=device)
    return lengths.to(device=device, dtype=torch.int64).clamp(0, t)


def greedy(logits: torch.Tensor, lengths: torch.Tensor | None = None, *, blank: int) -> Decoded:
    """Best-path decoding of logits or log-probabilities ``(B, T, C)``, frames past ``lengths`` ``(B,)`` ignored.
    Returns labels ``(B, T)`` (a string has at most T labels)."""
    logp = _log_probs(logits)
    b, t, _ = logp.shape
    device = logp.device
    lengths = _lengths(lengths, b, t, device)
    top, best = logp.max(dim=-1)  # (B, T)
    valid = torch.arange(t, device=device)[None, :] < lengths[:, None]
    prev = torch.cat([torch.full((b, 1), PAD, dtype=best.dtype, device=device), best[:, :-1]], dim=1)
    ink = valid & (best != blank)
    keep = ink & (best != prev)  # the first frame of each run of a label
    run = keep.long().cumsum(1) - 1  # (B, T): index of the output label a frame belongs to
    dump = torch.full_like(run, t)  # frames that emit nothing go to an extra column, dropped below
    labels = torch.full((b, t + 1), PAD, dtype=torch.int64, device=device)
    labels = labels.scatter(1, torch.where(keep, run, dump), best)[:, :t]
    conf = torch.zeros(b, t + 1, dtype=logp.dtype, device=device)
    conf = conf.scatter_reduce(1, torch.where(ink, run, dump), top.exp(), reduce="amax")[:, :t]
    scores = torch.where(valid, top, torch.zeros((), dtype=top.dtype, device=device)).sum(1)
    return Decoded(labels, keep.sum(1), scores, conf)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def _add(beams: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], which: int, value: float) -> None:
    """Add probability ``exp(value)`` to ``prefix``'s blank-ending (0) or label-ending (1) share."""
    entry = beams.setdefault(prefix, [-math.inf, -math.inf])
    entry[which] = _logaddexp(entry[which], value)


def _beam_one(
    lp: np.ndarray, blank: int, beam: int, prune: float, fsa: Automaton | None = None
) -> tuple[tuple[int, ...], float]:
    """Prefix beam search over one sequence's log-probabilities ``(T, C)``: ``(best prefix, log p(prefix))``.
    With ``fsa``, each prefix carries its DFA state: a label the state cannot take is not extended, a prefix the
    frames left cannot complete (``fsa.need``) is dropped, and the best accepted prefix wins (score ``-inf``
    when there is none)."""
    ninf = -math.inf
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, ninf)}  # prefix -> (log p_blank, log p_label)
    state = {(): 0}  # prefix -> DFA state (fsa only)
    log_prune = math.log(prune) if prune > 0 else ninf
    for t, frame in enumerate(lp):
        cands = [c for c in range(len(frame)) if c != blank and frame[c] >= log_prune]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            _add(nxt, prefix, 0, total + frame[blank])
            for c in cands:
                p = frame[c]
                if fsa is not None:  # the extension by c, where the pattern allows it
                    q = fsa.table[state[prefix]][c] if c < len(fsa.alphabet) else -1
                    if q < 0:
                        if prefix and prefix[-1] == c:
                            _add(nxt, prefix, 1, pnb + p)
                        continue
                    state[(*prefix, c)] = q
                if prefix and prefix[-1] == c:
                    _add(nxt, (*prefix, c), 1, pb + p)  # a repeat needs a blank in between
                    _add(nxt, prefix, 1, pnb + p)  # the same label continued
                else:
                    _add(nxt, (*prefix, c), 1, total + p)
        if fsa is not None:  # each further label takes a frame at least
            left = len(lp) - 1 - t
            nxt = {k: v for k, v in nxt.items() if fsa.need[state[k]] <= left}
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    final = [kv for kv in beams.items() if fsa is None or fsa.accepting[state[kv[0]]]]
    if not final:
        return (), ninf
    best, (pb, pnb) = max(final, key=lambda kv: _logaddexp(*kv[1]))
    score = _logaddexp(pb, pnb)
    return ((), ninf) if fsa is not None and score == ninf else (best, score)


def _beam(
    logits: torch.Tensor, lengths: torch.Tensor | None, blank: int, beam: int, prune: float, fsa: Automaton | None
) -> Decoded:
    """``_beam_one`` over a batch, per sample on the CPU in float64, the result on the input's device."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    logp = _log_probs(logits)
    b, t, _ = logp.shape
    device = logp.device
    n = _lengths(lengths, b, t, device).cpu().tolist()
    arr = logp.detach().cpu().double().numpy()
    labels = torch.full((b, t), PAD, dtype=torch.int64)
    scores = torch.zeros(b, dtype=torch.float64)
    out_len = torch.zeros(b, dtype=torch.int64)
    conf = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):
        seq, score = _beam_one(arr[i, : n[i]], blank, beam, prune, fsa)
        if fsa is not None and score == -math.inf and prune > 0:  # the pruned labels may be the only way in
            seq, score = _beam_one(arr[i, : n[i]], blank, beam, 0.0, fsa)
        out_len[i], scores[i] = len(seq), score
        if seq:
            labels[i, : len(seq)] = torch.tensor(seq)
            conf[i, : len(seq)] = math.exp(score / len(seq))
    return Decoded(labels.to(device), out_len.to(device), scores.to(device, logp.dtype), conf.to(device, logp.dtype))


def beam_search(
    logits: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    blank: int,
    beam: int = 8,
    prune: float = 1e-4,
) -> Decoded:
    """CTC prefix beam search of logits or log-probabilities ``(B, T, C)``: the prefix with the highest total
    probability among ``beam`` kept per frame. Labels below probability ``prune`` in a frame are not extended
    (0: exact search). ``confidence`` holds ``exp(score / n)`` per character, the per-label geometric mean."""
    return _beam(logits, lengths, blank, beam, prune, None)


def constrained_beam_search(
    logits: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    blank: int,
    automaton: Automaton,
    beam: int = 16,
    prune: float = 1e-4,
) -> Decoded:
    """The most probable labelling that ``automaton`` (``hwr.pattern.automaton``: class ``k`` is its symbol
    ``k``) accepts: ``beam_search`` whose prefixes carry their DFA state, extended only along the automaton and
    dropped when the frames left cannot complete them; exact for a beam as large as the prefixes and ``prune=0``.
    Labels below ``prune`` are not extended unless the search finds no accepted labelling so (a length that only
    improbable labels reach): then it runs again without pruning. A sample whose frames hold no accepted
    labelling (``\\d{9}`` in 6 frames) decodes to the empty labelling with score ``-inf``, length 0 and
    confidence 0: test ``scores == -inf``."""
    c = logits.shape[-1] if logits.dim() == 3 else 0
    k = len(automaton.alphabet)
    if not 0 <= blank < c or blank < k:
        raise ValueError(
            f"the automaton reads classes 0..{k - 1} ({automaton.alphabet}) and the blank ({blank}) must come after "
            f"them among the {c} classes of the logits; build the automaton over the model's alphabet"
        )
    return _beam(logits, lengths, blank, beam, prune, automaton)


def to_lists(labels: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Padded labels ``(B, L)`` and lengths ``(B,)`` as Python lists (one host sync)."""
    rows, ns = labels.cpu().tolist(), lengths.cpu().tolist()
    return [r[:k] for r, k in zip(rows, ns)]
