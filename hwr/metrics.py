"""Classification figures from a confusion matrix: accuracy, balanced accuracy, macro-F1 and per-class
precision / recall / F1. The evaluation step accumulates counts (sums); these functions divide once at the end,
so a metric over many batches equals the metric over the whole set."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["accumulate", "confusion_matrix", "per_class", "summarize"]


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
    """Add one batch's sums (from ``hwr.train.eval_step``) into running totals."""
    if totals is None:
        return {k: v.detach().clone() for k, v in sums.items()}
    return {k: totals[k] + sums[k] for k in totals}
