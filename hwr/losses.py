"""Classification losses for imbalanced data, and class-weight schemes computed from class counts.

Every loss has the signature ``loss(logits (B, C), labels (B,), mask (B,) bool | None) -> 0-d tensor`` so that
``hwr.engine.train.train_step`` can take any of them; ``mask`` drops padded samples from a fixed-shape batch.
``hyperparameters(config, counts)`` gives a ``LossConfig``'s values as tensors and ``make_loss(..., hp=)`` builds
from them: a compiled step taking them as an input serves every value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from hwr.errors import InputError

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

__all__ = [
    "Loss",
    "LossConfig",
    "Scheduled",
    "class_weights",
    "cross_entropy",
    "deferred",
    "effective_number_weights",
    "hyperparameters",
    "inverse_frequency_weights",
    "logit_adjusted_cross_entropy",
    "make_loss",
    "posthoc_adjust",
]


def cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Weighted mean cross-entropy with label smoothing; equals ``F.cross_entropy(logits, labels, weight=w,
    label_smoothing=s)`` when no sample is masked (the mean divides by the summed weights of the true classes).

    ``labels`` are int64 class indices ``(B,)`` or soft targets ``(B, C)`` (rows summing to 1, as mixup and
    CutMix give): a soft target weighs each sample by ``targets @ class_weights``, and one-hot targets give
    exactly the integer-label loss."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, C)
    n_cls = logits.shape[-1]
    soft = labels.is_floating_point()
    if soft and labels.shape != logp.shape:
        raise InputError(f"soft targets must have the logits' shape {tuple(logp.shape)}, got {tuple(labels.shape)}")
    nll = -(labels * logp).sum(-1) if soft else -logp.gather(1, labels[:, None])[:, 0]  # (B,)
    if class_weights is None:
        w_y = torch.ones_like(nll)
        smooth = -logp.mean(-1)
    else:
        w = class_weights.to(logp.dtype)
        w_y = labels.to(logp.dtype) @ w if soft else w[labels]
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
    tau: float | torch.Tensor = 1.0,
    label_smoothing: float | torch.Tensor = 0.0,
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
        raise InputError(f"beta must be in [0, 1), got {beta}")
    n = _counts(counts)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return w * (len(w) / w.sum())


def _counts(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.dim() != 1 or len(n) == 0 or bool((n <= 0).any()):
        raise InputError(f"class counts must be a non-empty 1-d sequence of positive numbers, got {counts}")
    return n


@dataclass(frozen=True)
class LossConfig:
    """How to weight classes. ``weighting``: ``none`` | ``inverse`` (power ``p``) | ``effective`` (``beta``) |
    ``logit_adjust`` (``tau``; ``tau=1`` is the balanced softmax). ``defer > 0`` is deferred re-weighting (Cao et
    al. 2019): plain cross-entropy for that share of the steps, then the weighted (or adjusted) loss."""

    weighting: str = "none"
    power: float = 1.0
    beta: float = 0.999
    tau: float = 1.0
    label_smoothing: float = 0.0
    defer: float = 0.0  # deferred re-weighting: the share of training steps before the class weights switch on

    def __post_init__(self) -> None:
        if not 0.0 <= self.defer < 1.0:
            raise InputError(f"defer must be in [0, 1) (share of training before weights apply), got {self.defer}")
        if self.weighting not in ("none", "inverse", "effective", "logit_adjust"):
            raise InputError(
                f"unknown class weighting {self.weighting!r}; choose none, inverse, effective or logit_adjust"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InputError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def class_weights(config: LossConfig, counts: Sequence[int] | torch.Tensor) -> torch.Tensor | None:
    """The per-class weight vector ``config`` asks for (float32), or None when it weights nothing."""
    if config.weighting == "inverse":
        return inverse_frequency_weights(counts, config.power).float()
    if config.weighting == "effective":
        return effective_number_weights(counts, config.beta).float()
    return None


class Scheduled(NamedTuple):
    """A loss that depends on the step counter: ``fn(logits, labels, mask, step)``. ``hwr.engine.train.train_step``
    passes ``state.step`` to it (a tensor, so a switch at step ``k`` never recompiles)."""

    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]

    def __call__(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
        step: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if step is None:
            raise TypeError("this loss is scheduled by the step counter; call it as loss(logits, labels, mask, step)")
        return self.fn(logits, labels, mask, step)


def deferred(plain: Loss, weighted: Loss, start_step: int | torch.Tensor) -> Scheduled:
    """Deferred re-weighting: ``plain`` before ``start_step`` (a number or an int64 0-d tensor), ``weighted`` from
    it on (both are evaluated and one is selected with ``torch.where``, so the step stays one fixed graph)."""

    def fn(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None, step: torch.Tensor) -> torch.Tensor:
        on = step >= start_step
        return torch.where(on, weighted(logits, labels, mask), plain(logits, labels, mask))

    return Scheduled(fn)


def _values(
    config: LossConfig, counts: Sequence[int] | torch.Tensor | None, device: torch.device | str | None, total_steps: int
) -> dict[str, Any]:
    """The numbers ``config`` weights its classes with: ``tau``, ``label_smoothing``, ``switch_step`` (the deferred
    switch) as Python numbers, ``prior`` and ``class_weights`` as float32 ``(C,)`` tensors on ``device`` (None
    where the weighting has none)."""
    if config.weighting != "none" and counts is None:
        raise InputError(f"class weighting {config.weighting!r} needs the training set's class counts")
    prior = weights = None
    if config.weighting == "logit_adjust":
        n = _counts(counts)
        prior = (n / n.sum()).float().to(device)
    elif counts is not None:
        weights = class_weights(config, counts)
        weights = None if weights is None else weights.to(device)
    return {
        "tau": config.tau,
        "label_smoothing": config.label_smoothing,
        "switch_step": int(config.defer * total_steps),
        "prior": prior,
        "class_weights": weights,
    }


def hyperparameters(
    config: LossConfig,
    counts: Sequence[int] | torch.Tensor | None = None,
    device: torch.device | str | None = None,
    *,
    total_steps: int = 0,
) -> dict[str, Any]:
    """The values ``make_loss(..., hp=)`` reads instead of ``config``'s numbers, as tensors on ``device``: ``tau``
    and ``label_smoothing`` (float64 0-d), ``switch_step`` (int64 0-d), ``prior`` and ``class_weights`` (float32
    ``(C,)`` or None), so one compiled step serves every tau, class weighting strength and switch step."""
    v = _values(config, counts, device, total_steps)
    scalar = lambda x, dtype: torch.tensor(x, dtype=dtype, device=device)
    return {
        **v,
        "tau": scalar(float(v["tau"]), torch.float64),
        "label_smoothing": scalar(float(v["label_smoothing"]), torch.float64),
        "switch_step": scalar(v["switch_step"], torch.int64),
    }


def make_loss(
    config: LossConfig,
    counts: Sequence[int] | torch.Tensor | None = None,
    device: torch.device | str | None = None,
    *,
    total_steps: int = 0,
    hp: dict[str, Any] | None = None,
) -> Loss:
    """A loss function for ``config``; ``counts`` (training-set class counts) are needed by every weighting
    other than ``none``. Constants are captured as tensors, so the compiled step sees them as fixed inputs.
    With ``config.defer > 0`` the result is ``Scheduled`` and switches at ``defer * total_steps``. With ``hp``
    (``hyperparameters``) the values come from those tensors and only the choices from ``config``."""
    v = _values(config, counts, device, total_steps) if hp is None else hp
    s, prior, w = v["label_smoothing"], v["prior"], v["class_weights"]
    if config.weighting == "logit_adjust":
        weighted: Loss = lambda lg, y, m=None: logit_adjusted_cross_entropy(
            lg, y, m, class_prior=prior, tau=v["tau"], label_smoothing=s
        )
    else:
        weighted = lambda lg, y, m=None: cross_entropy(lg, y, m, class_weights=w, label_smoothing=s)
    if config.defer > 0 and config.weighting != "none":
        plain: Loss = lambda lg, y, m=None: cross_entropy(lg, y, m, label_smoothing=s)
        return deferred(plain, weighted, v["switch_step"])
    return weighted


def posthoc_adjust(logits: torch.Tensor, class_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment (Menon et al. 2021): ``logits - tau * log(prior)`` turns a model trained on the
    long-tailed prior into a balanced-posterior classifier at inference, with no retraining."""
    return logits - tau * torch.log(class_prior.to(device=logits.device, dtype=logits.dtype).clamp_min(1e-12))


from hwr.ctc import ctc_loss as ctc  # noqa: E402, F401  (the pure CTC loss; see hwr.ctc)
