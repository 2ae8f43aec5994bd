"""Connectionist temporal classification (Graves et al. 2006) as a pure function of fixed-shape tensors.

``ctc_loss`` is the negative log-likelihood of the targets under all alignments, computed by the log-space
forward (alpha) recursion over the extended label sequence ``blank, y1, blank, y2, ..., yS, blank`` (length
``2S + 1``). Everything has a static shape: targets are padded ``(B, S)`` with their lengths, frames past
``input_lengths`` leave alpha unchanged (masked columns), and the time loop is a Python loop over the static
``T`` that ``torch.compile(fullgraph=True)`` unrolls into one graph. No data-dependent shapes, no host syncs, no
custom autograd: gradients come from autograd through the recursion, and the function runs under ``vmap`` and on
any device (``F.ctc_loss`` has no vmap rule and does not trace under ``torch.compile`` on CUDA, pytorch#183396).

Conventions (as ``F.ctc_loss`` with ``(B, S)`` padded targets, but batch first):

- input: logits or log-probabilities ``(B, T, C)``; ``log_softmax`` is applied inside (a no-op on
  log-probabilities), so the gradient with respect to the input equals ``F.ctc_loss``'s with respect to
  ``log_probs`` (which assumes normalised inputs) and is the true gradient with respect to logits;
- ``targets`` ``(B, S)`` int64, values past ``target_lengths`` are ignored (any padding value);
- ``reduction="mean"`` divides each loss by its target length (at least 1), then averages over the batch;
  ``"sum"`` sums; ``"none"`` returns ``(B,)``;
- an impossible alignment (``input_length < target_length + repeats``) has loss ``+inf``; with
  ``zero_infinity=True`` its loss and its gradients are 0 instead (the recursion uses a finite stand-in for
  log 0, so the gradients of the other samples stay finite either way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["NEG", "ctc_loss"]

NEG = -1e30  # log 0 stand-in: finite, so no inf - inf = nan appears in the recursion or its gradient
_IMPOSSIBLE = -1e29  # a log-likelihood below this is an impossible alignment (+inf loss)


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    *,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """CTC loss of ``log_probs`` (logits or log-probabilities ``(B, T, C)``) against padded ``targets``
    ``(B, S)`` with ``input_lengths`` ``(B,)`` (frames used, ``<= T``) and ``target_lengths`` ``(B,)``
    (``<= S``). ``blank`` is the blank class index (``0 <= blank < C``). Returns a 0-d tensor, or ``(B,)``
    for ``reduction="none"``."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if log_probs.dim() != 3 or targets.dim() != 2:
        raise ValueError(
            f"ctc_loss takes log_probs (B, T, C) and padded targets (B, S); got {tuple(log_probs.shape)} and "
            f"{tuple(targets.shape)}"
        )
    b, t_max, c = log_probs.shape
    s = targets.shape[1]
    if targets.shape[0] != b:
        raise ValueError(f"targets have batch {targets.shape[0]}, log_probs {b}")
    if not 0 <= blank < c:
        raise ValueError(f"blank={blank} is not a class index of {c} classes")
    device = log_probs.device
    x = log_probs if log_probs.dtype in (torch.float32, torch.float64) else log_probs.float()
    logp = F.log_softmax(x, dim=-1)  # (B, T, C), float32 (float64 stays)
    target_lengths = target_lengths.to(device=device, dtype=torch.int64)
    input_lengths = input_lengths.to(device=device, dtype=torch.int64)

    # extended labels: blank at even positions, targets at odd ones; padding past a target's length -> blank
    pos = torch.arange(s, device=device)
    labels = torch.where(pos < target_lengths[:, None], targets.to(device), blank)  # (B, S)
    blanks = torch.full((b, 1), blank, dtype=torch.int64, device=device)
    pairs = torch.stack([blanks.expand(b, s), labels], dim=2).view(b, 2 * s)  # blank, y1, blank, y2, ...
    ext = torch.cat([pairs, blanks], dim=1)  # (B, 2S+1)
    n_ext = 2 * s + 1
    # skip transition s-2 -> s: allowed into a label that differs from the label two back
    prev2 = torch.cat([blanks, blanks, ext[:, :-2]], dim=1)
    skip = (ext != blank) & (ext != prev2)  # (B, 2S+1)
    neg = torch.full((), NEG, dtype=logp.dtype, device=device)

    emit = logp.gather(2, ext[:, None, :].expand(b, t_max, n_ext))  # (B, T, 2S+1)
    state = torch.arange(n_ext, device=device)
    alpha = torch.where(state < 2, emit[:, 0], neg)  # (B, 2S+1): start in the first blank or the first label
    skip_add = torch.where(skip, 0.0, neg)  # log of the skip transition's weight: 1 or 0
    running = (torch.arange(t_max, device=device)[:, None] < input_lengths)[:, :, None]  # (T, B, 1)
    for t in range(1, t_max):
        padded = F.pad(alpha, (2, 0), value=NEG)  # (B, 2S+3): states -2, -1 hold log 0
        moves = torch.stack([alpha, padded[:, 1:-1], padded[:, :-2] + skip_add])  # stay, step, skip
        new = torch.logsumexp(moves, dim=0) + emit[:, t]
        alpha = torch.where(running[t], new, alpha)  # masked columns: alpha unchanged

    last = 2 * target_lengths  # index of the final blank
    a_end = alpha.gather(1, last[:, None])[:, 0]
    a_lab = alpha.gather(1, (last - 1).clamp_min(0)[:, None])[:, 0]
    a_lab = torch.where(target_lengths > 0, a_lab, neg)
    m = torch.maximum(a_end, a_lab)
    loglik = m + torch.log(torch.exp(a_end - m) + torch.exp(a_lab - m))  # (B,)
    impossible = loglik < _IMPOSSIBLE
    inf = torch.full((), float("inf"), dtype=logp.dtype, device=device)
    if zero_infinity:
        loss = torch.where(impossible, torch.zeros((), dtype=logp.dtype, device=device), -loglik)
    else:
        loss = torch.where(impossible, inf, -loglik)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return (loss / target_lengths.clamp_min(1).to(loss.dtype)).mean()
