"""Classification figures from a confusion matrix: accuracy, balanced accuracy, macro-F1 and per-class
precision / recall / F1; and string figures from edit distances: character error rate, string (exact-match)
accuracy, both by string length. The evaluation steps accumulate counts (sums); these functions divide once at the
end, so a metric over many batches equals the metric over the whole set."""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "accumulate",
    "confusion_matrix",
    "edit_distance",
    "per_class",
    "string_sums",
    "summarize",
    "summarize_strings",
]


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(C, C)`` int64, rows true class, columns predicted class."""
    if labels.shape != preds.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and preds {tuple(preds.shape)} must have the same shape")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Per-class precision, recall, F1 and support; a class never predicted (or absent) scores 0, as
    scikit-learn does with ``zero_division=0``."""
    c = confusion.double()
    tp = c.diagonal()
    predicted, support = c.sum(0), c.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
    return {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": [int(s) for s in support.tolist()],
    }


def summarize(confusion: torch.Tensor, *, loss_sum: float | None = None) -> dict[str, Any]:
    """Headline figures and per-class detail from a confusion matrix (JSON-ready).

    ``balanced_accuracy`` is the mean recall over classes present; ``macro_f1`` the unweighted mean F1 over the
    classes that occur in the labels or the predictions (scikit-learn's ``f1_score(average="macro")``), so a
    class absent from a small validation split neither scores nor counts.
    """
    c = confusion.detach().cpu().long()
    n = int(c.sum())
    pc = per_class(c)
    present = [r for r, s in zip(pc["recall"], pc["support"]) if s > 0]
    seen = (c.sum(0) + c.sum(1)) > 0
    f1_seen = [f for f, k in zip(pc["f1"], seen.tolist()) if k]
    out: dict[str, Any] = {
        "count": n,
        "accuracy": float(c.diagonal().sum()) / max(n, 1),
        "balanced_accuracy": sum(present) / max(len(present), 1),
        "macro_f1": sum(f1_seen) / max(len(f1_seen), 1),
        "per_class": pc,
        "confusion": c.tolist(),
    }
    if loss_sum is not None:
        out["loss"] = float(loss_sum) / max(n, 1)
    return out


def accumulate(totals: dict[str, torch.Tensor] | None, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add one batch's sums (from ``hwr.engine.train.eval_step``) into running totals."""
    if totals is None:
        return {k: v.detach().clone() for k, v in sums.items()}
    return {k: totals[k] + sums[k] for k in totals}


# ---------------------------------------------------------------------------------------------- strings


def edit_distance(
    hyp: torch.Tensor, hyp_lengths: torch.Tensor, ref: torch.Tensor, ref_lengths: torch.Tensor
) -> torch.Tensor:
    """Levenshtein distance ``(B,)`` int64 between padded label sequences ``hyp`` ``(B, N)`` and ``ref``
    ``(B, M)`` with their lengths (values past a length are ignored): insertions, deletions and substitutions
    cost 1. Batched tensor ops: one loop over the N hypothesis positions; each row of the dynamic programme is a
    ``cummin`` (``d[i][j] = min_k (base[k] + j - k)``), so nothing runs per sample."""
    b, n = hyp.shape
    m = ref.shape[1]
    device = ref.device
    hyp, hyp_lengths, ref_lengths = hyp.to(device), hyp_lengths.to(device), ref_lengths.to(device)
    j = torch.arange(m + 1, device=device)
    row = j.expand(b, m + 1)  # d[0][j] = j
    for i in range(1, n + 1):
        cost = (hyp[:, i - 1, None] != ref).long()  # (B, M)
        base = torch.cat([torch.full((b, 1), i, device=device), torch.minimum(row[:, 1:] + 1, row[:, :-1] + cost)], 1)
        new = torch.cummin(base - j, dim=1).values + j  # (B, M+1)
        row = torch.where((i <= hyp_lengths)[:, None], new, row)  # rows past a hypothesis's end stay
    return row.gather(1, ref_lengths.long()[:, None])[:, 0]


def string_sums(
    hyp: torch.Tensor,
    hyp_lengths: torch.Tensor,
    ref: torch.Tensor,
    ref_lengths: torch.Tensor,
    max_length: int,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Sums over a batch, indexed by reference length ``0..max_length`` (each ``(max_length + 1,)`` int64):
    ``edits`` (edit distance), ``chars`` (reference characters), ``exact`` (strings read exactly) and ``count``
    (strings). ``mask`` ``(B,)`` drops padding samples. Add batches with ``accumulate``, divide once with
    ``summarize_strings``."""
    device = ref.device
    d = edit_distance(hyp, hyp_lengths, ref, ref_lengths)  # (B,)
    keep = torch.ones_like(d, dtype=torch.bool) if mask is None else mask.to(device)
    length = ref_lengths.to(device).long().clamp(0, max_length)
    weight = keep.long()

    def per_length(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(max_length + 1, dtype=torch.int64, device=device).scatter_add(0, length, v * weight)

    return {
        "edits": per_length(d),
        "chars": per_length(length),
        "exact": per_length((d == 0).long()),
        "count": per_length(torch.ones_like(d)),
    }


def summarize_strings(sums: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``cer`` (edits / reference characters), ``string_accuracy`` (exact / strings), ``count``, and per reference
    length present: ``by_length`` rows ``{length, count, cer, string_accuracy}`` (JSON-ready)."""
    s = {k: sums[k].detach().cpu().long() for k in ("edits", "chars", "exact", "count")}
    rows = []
    for n in range(len(s["count"])):
        count = int(s["count"][n])
        if count:
            chars = int(s["chars"][n])
            rows.append(
                {
                    "length": n,
                    "count": count,
                    "cer": int(s["edits"][n]) / chars if chars else float(int(s["edits"][n]) > 0),
                    "string_accuracy": int(s["exact"][n]) / count,
                }
            )
    total, chars = int(s["count"].sum()), int(s["chars"].sum())
    return {
        "count": total,
        "chars": chars,
        "cer": int(s["edits"].sum()) / max(chars, 1),
        "string_accuracy": int(s["exact"].sum()) / max(total, 1),
        "by_length": rows,
    }
