"""A digit run's calibration: ``hwr.calibration`` applied to a run. After training, ``run`` fits the temperature on
the validation split (``fit_logits``) and writes it to the run folder (``hwr.runs.Calibration``,
``calibration.json``); ``calibrate`` does the same for a run trained before that; ``with_thresholds`` adds the reject
threshold of a target error (fitted on the validation split, with the stored temperature) when it is not stored
yet. ``confidence`` is the one definition of what ``hwr predict``, ``hwr evaluate`` and a web page show: the class
and its calibrated probability, the max softmax of ``logits / T``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hwr import calibration, runs
from hwr.config import DataSettings
from hwr.data import augment as aug
from hwr.engine import runtime, train
from hwr.models import Model
from hwr.runs import Calibration
from hwr.tasks.digits.preparation import read_config, validation_set

__all__ = [
    "CONFIDENCE",
    "calibrate",
    "confidence",
    "fit_logits",
    "logits_of",
    "thresholds_for",
    "validation_logits",
    "with_thresholds",
]

CONFIDENCE = "max_softmax"  # what a digit run's thresholds compare against: the calibrated top probability


def logits_of(
    model: Model, params: Any, model_state: Any, images: torch.Tensor, *, mean: float, std: float
) -> torch.Tensor:
    """Float32 logits ``(N, C)`` of uint8 images ``(N, 1, H, W)`` (normalised as the run was trained)."""
    transform = aug.make_transform(None, mean, std)
    return train.predict(model, params, model_state, images, batch_size=1000, transform=transform).float()


def confidence(logits: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(class (N,), confidence (N,))``: the argmax of ``logits`` ``(N, C)`` and its probability under
    ``softmax(logits / temperature)`` (float64 where the device has it, so a threshold compares alike everywhere)."""
    wide = logits.to(torch.float32 if logits.device.type == "mps" else torch.float64)
    conf, pred = calibration.probabilities(wide, temperature).max(dim=-1)
    return pred, conf


def thresholds_for(
    conf: torch.Tensor, correct: torch.Tensor, targets: Sequence[float]
) -> dict[float, dict[str, float]]:
    """Target error -> the figures of its threshold on these readings (``hwr.calibration.threshold_for_error``:
    ``InputError`` naming the lowest reachable error when a target is out of reach)."""
    return {float(t): calibration.threshold_for_error(conf, correct, t)._asdict() for t in targets}


def fit_logits(logits: torch.Tensor, labels: torch.Tensor, targets: Sequence[float] = ()) -> Calibration:
    """The calibration of held-out ``logits`` ``(N, C)`` and ``labels`` ``(N,)``: the temperature, the NLL and
    ECE before and after it, and the thresholds of ``targets`` on the calibrated confidence. Pure."""
    t = calibration.fit_temperature(logits, labels)
    pred, raw = confidence(logits)
    _, conf = confidence(logits, t)
    correct = pred == labels
    figures = {
        "nll_before": calibration.nll(logits, labels),
        "nll_after": calibration.nll(logits, labels, t),
        "ece_before": calibration.expected_calibration_error(raw, correct),
        "ece_after": calibration.expected_calibration_error(conf, correct),
        "accuracy": float(correct.double().mean()),
    }
    if min(calibration.TEMPERATURE_BOUNDS) == t or max(calibration.TEMPERATURE_BOUNDS) == t:
        figures["at_bound"] = 1.0
    thresholds = thresholds_for(conf, correct, targets)
    return Calibration(t, CONFIDENCE, thresholds, "val", int(labels.shape[0]), figures)


def validation_logits(
    run_dir: str | Path, *, data: DataSettings | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, C), labels (N,))`` of a trained digit run on the validation split it held out."""
    device = runtime.resolve_device(device)
    config = read_config(run_dir)
    model, params, state, meta = runs.load_run(run_dir, device)
    x, y, _ = validation_set(config, data, device=device)
    return logits_of(model, params, state, x, mean=meta["mean"], std=meta["std"]), y


def calibrate(
    run_dir: str | Path,
    *,
    targets: Sequence[float] = (),
    data: DataSettings | None = None,
    device: str | torch.device = "cpu",
) -> Calibration:
    """Fit a trained run's temperature (and the thresholds of ``targets``) on its validation split and write
    ``calibration.json`` (replacing one there: thresholds depend on the temperature)."""
    logits, labels = validation_logits(run_dir, data=data, device=device)
    c = fit_logits(logits, labels, targets)
    runs.write_calibration(run_dir, c)
    return c


def with_thresholds(
    run_dir: str | Path,
    targets: Sequence[float],
    *,
    data: DataSettings | None = None,
    device: str | torch.device = "cpu",
) -> Calibration:
    """The run's calibration holding a threshold for every one of ``targets``: stored ones are read; missing ones
    are fitted on the validation split with the stored temperature (and the temperature too where the run has no
    ``calibration.json``), then stored."""
    c = runs.read_calibration(run_dir)
    if c is None:
        return calibrate(run_dir, targets=targets, data=data, device=device)
    missing = [t for t in targets if c.threshold(t) is None]
    if not missing:
        return c
    logits, labels = validation_logits(run_dir, data=data, device=device)
    pred, conf = confidence(logits, c.temperature)
    c = c._replace(thresholds={**c.thresholds, **thresholds_for(conf, pred == labels, missing)})
    runs.write_calibration(run_dir, c)
    return c
