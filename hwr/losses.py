"""Classification losses for imbalanced data, and class-weight schemes computed from class counts.

Every loss has the signature ``loss(logits (B, C), labels (B,), mask (B,) bool | None) -> 0-d tensor`` so that
``hwr.train.train_step`` can take any of them; ``mask`` drops padded samples from a fixed-shape batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

__all__ = [
    "Loss",
    "LossConfig",
    "class_weights",
    "cross_entropy",
    "effective_number_weights",
    "inverse_frequency_weights",
    "logit_adjusted_cross_entropy",
    "make_loss",
]


def cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Weighted mean cross-entropy with label smoothing; equals ``F.cross_entropy(logits, labels, weight=w,
    label_smoothing=s)`` when no sample is masked (the mean divides by the summed weights of the true classes)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, C)
    nll = -logp.gather(1, labels[:, None])[:, 0]  # (B,)
    n_cls = logits.shape[-1]
    if class_weights is None:
        w_y = torch.ones_like(nll)
        smooth = -logp.mean(-1)
    else:
        w = class_weights.to(logp.dtype)
        w_y = w[labels]
        smooth = -(logp * w).sum(-1) / n_cls
    per_sample = (1.0 - label_smoothing) * w_y * nll + label_smoothing * smooth
    if mask is not None:
        m = mask.to(per_sample.dtype)
        per_sample, w_y = per_sample * m, w_y * m
    return per_sample.sum() / w_y.sum().clamp_min(1e-12)


def logit_adjusted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    class_prior: torch.Tensor,
    tau: float = 1.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Logit-adjusted loss (Menon et al. 2021): cross-entropy of ``logits + tau * log(prior)``; the model's raw
    logits then estimate the balanced posterior, so prediction needs no correction."""
    adjusted = logits + tau * torch.log(class_prior.to(logits.dtype).clamp_min(1e-12))
    return cross_entropy(adjusted, labels, mask, label_smoothing=label_smoothing)


def inverse_frequency_weights(counts: Sequence[int] | torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``w_c ∝ n_c ** -power`` (power 0: uniform, 1: inverse frequency, 0.5: square root), mean 1 over classes."""
    n = _counts(counts)
    w = n.pow(-power)
    return w * (len(w) / w.sum())


def effective_number_weights(counts: Sequence[int] | torch.Tensor, beta: float = 0.999) -> torch.Tensor:
    """Class-balanced weights of Cui et al. 2019: ``w_c ∝ (1 - beta) / (1 - beta ** n_c)``, mean 1 over classes.
    ``beta -> 0`` gives uniform weights, ``beta -> 1`` inverse frequency."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = _counts(counts)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return w * (len(w) / w.sum())


def _counts(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.dim() != 1 or len(n) == 0 or bool((n <= 0).any()):
        raise ValueError(f"class counts must be a non-empty 1-d sequence of positive numbers, got {counts}")
    return n


@dataclass(frozen=True)
class LossConfig:
    """How to weight classes. ``weighting``: ``none`` | ``inverse`` (power ``p``) | ``effective`` (``beta``) |
    ``logit_adjust`` (``tau``)."""

    weighting: str = "none"
    power: float = 1.0
    beta: float = 0.999
    tau: float = 1.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.weighting not in ("none", "inverse", "effective", "logit_adjust"):
            raise ValueError(
                f"unknown class weighting {self.weighting!r}; choose none, inverse, effective or logit_adjust"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def class_weights(config: LossConfig, counts: Sequence[int] | torch.Tensor) -> torch.Tensor | None:
    """The per-class weight vector ``config`` asks for (float32), or None when it weights nothing."""
    if config.weighting == "inverse":
        return inverse_frequency_weights(counts, config.power).float()
    if config.weighting == "effective":
        return effective_number_weights(counts, config.beta).float()
    return None


def make_loss(config: LossConfig, counts: Sequence[int] | torch.Tensor | None = None, device=None) -> Loss:
    """A loss function for ``config``; ``counts`` (training-set class counts) are needed by every weighting
    other than ``none``. Constants are captured as tensors, so the compiled step sees them as fixed inputs."""
    if config.weighting != "none" and counts is None:
        raise ValueError(f"class weighting {config.weighting!r} needs the training set's class counts")
    s = config.label_smoothing
    if config.weighting == "logit_adjust":
        n = _counts(counts)
        prior = (n / n.sum()).float().to(device)
        return lambda lg, y, m=None: logit_adjusted_cross_entropy(
            lg, y, m, class_prior=prior, tau=config.tau, label_smoothing=s
        )
    w = class_weights(config, counts) if counts is not None else None
    w = None if w is None else w.to(device)
    return lambda lg, y, m=None: cross_entropy(lg, y, m, class_weights=w, label_smoothing=s)
