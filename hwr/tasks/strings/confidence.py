"""How sure a strings model is of a whole reading, and the reject threshold of a strings run.

A string is right only when every character is, so its confidence must rank whole readings. ``string_confidence``
decodes and scores per-frame class scores ``(B, T, C)`` by one of ``KINDS``:

- ``chars``: the product of the greedy per-character confidences (each the highest probability over its frames)
- ``path``: the probability of the greedy best path, ``exp`` of its log-probability over every frame (blanks too)
- ``min_frame``: the lowest top probability of any frame (blanks too): the weakest single decision
- ``reading``: the probability of the greedy reading summed over all its alignments (``exp(-CTC loss)``)
- ``beam``: the same for the reading of a prefix beam search of width ``BEAM`` (``hwr.decode.beam_search``), which
  finds the most probable reading rather than the best path's

An empty reading (nothing read) has confidence 0 under every kind: a person looks. ``CONFIDENCE`` is the one used:
``beam`` ranked the errors best on the validation strings (AURC 0.033 against 0.049 for ``chars``, 0.062
``path``, 0.070 ``min_frame``; ``benchmarks/selective.py --strings``), and ``hwr.tasks.strings.predict(beam=BEAM)``
gives it as the product of its per-character confidences (``from_characters``). Only the threshold is fitted for
strings (no temperature: ``calibrate`` writes ``temperature`` 1.0 and says so); ``calibrate`` fits it on the
run's validation strings and stores it in the run folder (``hwr.runs.Calibration``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hwr import calibration, decode, runs
from hwr.config import DataSettings
from hwr.ctc import ctc_loss
from hwr.data import strings as ds
from hwr.engine import runtime
from hwr.errors import InputError
from hwr.models import Model
from hwr.runs import Calibration
from hwr.tasks.strings.config import TASK
from hwr.tasks.strings.step import exact, frame_counts, normalise
from hwr.tasks.strings.training import read_config, validation_set

__all__ = [
    "BEAM",
    "CONFIDENCE",
    "KINDS",
    "NOTE",
    "calibrate",
    "from_characters",
    "scored",
    "string_confidence",
    "with_thresholds",
]

KINDS = ("chars", "path", "min_frame", "reading", "beam")
CONFIDENCE = "beam"  # the string confidence used: see the module docstring and benchmarks/selective.py
BEAM = 8  # the width of the beam search whose reading and probability CONFIDENCE is
NOTE = "strings: no temperature is fitted (1.0); the threshold compares the reading's confidence as is"


def string_confidence(
    logits: torch.Tensor, frames: torch.Tensor, *, blank: int, kind: str = CONFIDENCE, beam: int = BEAM
) -> tuple[decode.Decoded, torch.Tensor]:
    """``(reading, confidence (B,) float64 in [0, 1])`` of per-frame scores ``logits`` ``(B, T, C)`` whose first
    ``frames`` ``(B,)`` hold content, by ``kind`` (``KINDS``; ``beam``: the width of the beam search)."""
    if kind not in KINDS:
        raise InputError(f"unknown string confidence {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "beam":
        dec = decode.beam_search(logits, frames, blank=blank, beam=beam)
        conf = dec.scores.double().exp()
    else:
        dec = decode.greedy(logits, frames, blank=blank)
        conf = _greedy_confidence(logits, frames, dec, blank, kind)
    return dec, torch.where(dec.lengths > 0, conf, 0.0)


def _greedy_confidence(
    logits: torch.Tensor, frames: torch.Tensor, dec: decode.Decoded, blank: int, kind: str
) -> torch.Tensor:
    if kind == "chars":
        inside = torch.arange(dec.labels.shape[1], device=logits.device)[None, :] < dec.lengths[:, None]
        return torch.where(inside, dec.confidence.double(), 1.0).prod(1)
    if kind == "path":
        return dec.scores.double().exp()
    if kind == "reading":
        nll = ctc_loss(logits.double(), dec.labels.clamp_min(0), frames, dec.lengths, blank=blank, reduction="none")
        return (-nll).exp()
    top = torch.log_softmax(logits.double(), -1).max(-1).values.exp()  # (B, T)
    valid = torch.arange(top.shape[1], device=top.device)[None, :] < frames[:, None]
    return torch.where(valid, top, 1.0).min(1).values


def from_characters(confidences: Sequence[float]) -> float:
    """A reading's confidence from its per-character confidences (``hwr.tasks.strings.predict``'s output): their
    product, 0.0 for an empty reading as in ``string_confidence``. With ``predict(beam=BEAM)`` (the characters then
    carry the per-label geometric mean) it is the ``beam`` confidence; greedily read, ``chars``."""
    if not confidences:
        return 0.0
    out = 1.0
    for c in confidences:
        out *= float(c)
    return out


def scored(
    model: Model,
    params: Any,
    model_state: Any,
    strings: ds.Strings,
    *,
    mean: float,
    std: float,
    kind: str = CONFIDENCE,
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confidence (N,), correct (N,))`` of the model's readings of rendered ``strings`` (an exact reading is
    correct), by ``kind``."""
    c = model.config
    confs, oks = [], []
    with torch.inference_mode():
        for i in range(0, len(strings.lengths), batch_size):
            part = ds.Strings(*(t[i : i + batch_size] for t in strings))
            logits, _ = model.apply(params, model_state, normalise(part.images, mean, std), train=False)
            frames = frame_counts(c, part.widths, logits.shape[1])
            dec, conf = string_confidence(logits, frames, blank=c.blank, kind=kind)
            confs.append(conf)
            oks.append(exact(dec, part.targets, part.lengths))
    if not confs:
        raise InputError("no strings to score: pass at least one")
    return torch.cat(confs), torch.cat(oks)


def _validation_scores(
    run_dir: str | Path, data: DataSettings | None, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    device = runtime.resolve_device(device)
    model, params, state, meta = runs.load_run(run_dir, device, TASK)
    val = validation_set(read_config(run_dir), data, device=device)
    return scored(model, params, state, val, mean=meta["mean"], std=meta["std"])


def _thresholds(conf: torch.Tensor, correct: torch.Tensor, targets: Sequence[float]) -> dict[float, dict[str, Any]]:
    return {float(t): calibration.threshold_for_error(conf, correct, t)._asdict() for t in targets}


def calibrate(
    run_dir: str | Path,
    *,
    targets: Sequence[float] = (),
    data: DataSettings | None = None,
    device: str | torch.device = "cpu",
) -> Calibration:
    """Fit the reject thresholds of ``targets`` on a strings run's validation strings (confidence
    ``CONFIDENCE``; no temperature) and write ``calibration.json``, with the validation figures of the
    confidence (string accuracy, ECE, AURC)."""
    conf, correct = _validation_scores(run_dir, data, device)
    curve = calibration.risk_coverage(conf, correct)
    figures = {
        "string_accuracy": float(correct.double().mean()),
        "ece": calibration.expected_calibration_error(conf, correct),
        "aurc": curve.aurc,
        "oracle_aurc": curve.oracle_aurc,
    }
    c = Calibration(1.0, CONFIDENCE, _thresholds(conf, correct, targets), "val", len(conf), figures, NOTE)
    runs.write_calibration(run_dir, c)
    return c


def with_thresholds(
    run_dir: str | Path,
    targets: Sequence[float],
    *,
    data: DataSettings | None = None,
    device: str | torch.device = "cpu",
) -> Calibration:
    """The strings run's calibration holding a threshold for every one of ``targets``: stored ones read, missing
    ones fitted on the validation strings and stored (a stored calibration of another confidence is refitted)."""
    c = runs.read_calibration(run_dir)
    if c is None or c.confidence != CONFIDENCE:
        return calibrate(run_dir, targets=targets, data=data, device=device)
    missing = [t for t in targets if c.threshold(t) is None]
    if not missing:
        return c
    conf, correct = _validation_scores(run_dir, data, device)
    c = c._replace(thresholds={**c.thresholds, **_thresholds(conf, correct, missing)})
    runs.write_calibration(run_dir, c)
    return c
