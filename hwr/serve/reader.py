"""Image bytes to a reading, apart from HTTP: what ``hwr serve`` answers.

``load`` reads a trained run folder once (a digit classifier or a strings model) with its calibration
(``calibration``: the temperature and reject threshold in the run's ``calibration.json``, or ``--reject-below``);
``read`` decodes an uploaded image file's bytes through the path ``hwr predict`` takes
(``hwr.data.digits.load_image_bytes``, then ``mnist_style`` for a digit or ``normalise_string`` for a string) and
returns a JSON-able reading:

    {"kind": "digit" | "string", "text": "7", "shown": "7" or "?", "confidence": p,
     "characters": [{"char": "7", "confidence": p, "rejected": false}, ...],
     "alternatives": [["7", 0.93], ["1", 0.04], ["9", 0.01]], "rejected": false,
     "reject_below": 0.5, "temperature": 1.0}

The confidences are the ones ``hwr predict`` and the thresholds use. A digit's: its probability under
``softmax(logits / temperature)``, with the top three classes as alternatives. A string's: the product of its
characters' (each the greedy CTC decoder's highest probability over the character's frames), with no
alternatives (the decoders return one best reading). A reading is rejected when its confidence is below the
threshold (a string also when it reads as nothing); each character whose own confidence is below it is ``shown``
as ``?``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hwr import runs, tree
from hwr.config import from_dict
from hwr.data import augment, digits
from hwr.data import strings as ds
from hwr.errors import InputError
from hwr.models import Model
from hwr.tasks import digits as digit_task
from hwr.tasks import strings as string_task
from hwr.tasks.digits import calibrate as digit_calibration
from hwr.tasks.strings import confidence as string_confidence

__all__ = ["DEFAULT_REJECT", "DIGIT", "KINDS", "STRING", "Calibration", "Reader", "calibration", "load", "read"]

DIGIT, STRING = "digit", "string"
KINDS = (DIGIT, STRING)
DEFAULT_REJECT = 0.5  # the reject threshold of a run that stores none, when --reject-below is not given
_TOP = 3  # alternatives shown for a digit


class Calibration(NamedTuple):
    """How a run's scores become the confidences a reading shows, and where they are rejected."""

    temperature: float  # logits are divided by it before the softmax (1: none fitted)
    reject_below: float  # a reading (and a character) whose confidence is below this is rejected
    source: str  # where the threshold came from, in words


def calibration(run_dir: str | Path, reject_below: float | None = None) -> Calibration:
    """The calibration ``read`` applies to ``run_dir``'s scores, the one place the server meets a run's
    calibration (``hwr.runs.read_calibration``): the stored temperature (1 without ``calibration.json``), and
    the threshold ``reject_below`` when given, else the stored one of the smallest target error (the most
    careful; ``hwr calibrate --target-error E`` stores them), else ``DEFAULT_REJECT``."""
    if reject_below is not None and not 0.0 <= reject_below <= 1.0:
        raise InputError(f"the reject threshold must lie in [0, 1], got {reject_below}; e.g. --reject-below 0.5")
    stored = runs.read_calibration(run_dir)
    temperature = 1.0 if stored is None else float(stored.temperature)
    if reject_below is not None:
        return Calibration(temperature, float(reject_below), "--reject-below")
    if stored is not None and stored.thresholds:
        target = min(stored.thresholds)
        return Calibration(temperature, stored.threshold(target), f"{runs.CALIBRATION} (target error {target:g})")
    return Calibration(temperature, DEFAULT_REJECT, f"the default ({runs.CALIBRATION} holds none)")


@dataclass(frozen=True)
class Reader:
    """A trained run loaded once, on its device, with what reading it needs (``load``)."""

    kind: str  # DIGIT or STRING
    run: Path
    model: Model
    params: Any
    model_state: Any
    meta: dict[str, Any]
    calibration: Calibration
    spec: ds.StringSpec | None  # the geometry a strings run was trained on; None for a digit run


def load(run_dir: str | Path, *, device: str | torch.device = "cpu", reject_below: float | None = None) -> Reader:
    """The run folder ``run_dir`` (either task: its ``config.json`` says which) ready to ``read``, on ``device``.
    Raises ``RunError`` for a folder that is not a trained run or holds an invalid ``calibration.json``."""
    run_dir = Path(run_dir)
    task = runs.task_of(run_dir)
    cal = calibration(run_dir, reject_below)
    if task == string_task.TASK:
        model, params, state, meta = string_task.load_run(run_dir, device)
        spec = from_dict(ds.StringSpec, meta["data"])
        return Reader(STRING, run_dir, model, params, state, meta, cal, spec)
    model, params, state, meta = digit_task.load_run(run_dir, device)
    return Reader(DIGIT, run_dir, model, params, state, meta, cal, None)


def read(reader: Reader, data: bytes, name: str = "upload") -> dict[str, Any]:
    """The reading of one image file's ``data`` (any format PIL reads) by ``reader``; ``InputError`` (naming
    ``name``) for bytes that are not an image, hold no ink, or are too large to decode."""
    ink = digits.load_image_bytes(data, name, string=reader.kind != DIGIT)  # (H, W) float ink map
    if reader.kind == DIGIT:
        return _read_digit(reader, digits.mnist_style(ink))
    return _read_string(reader, string_task.normalise_string(ink, reader.spec))


def _character(char: str, p: float, cal: Calibration) -> dict[str, Any]:
    return {"char": char, "confidence": p, "rejected": p < cal.reject_below}


def _read_digit(r: Reader, x: torch.Tensor) -> dict[str, Any]:
    """A uint8 ``(1, 28, 28)`` digit read as ``hwr predict`` reads it (the run's normalisation; the confidence
    ``hwr.tasks.digits.calibrate.confidence``, the calibrated top probability), with the top classes."""
    device = tree.leaves(r.params)[0].device
    transform = augment.make_transform(None, r.meta["mean"], r.meta["std"])
    with torch.inference_mode():
        logits = r.model.apply(r.params, r.model_state, transform(None, x[None].to(device)), train=False)[0].float()
    t = r.calibration.temperature
    _, conf = digit_calibration.confidence(logits, t)
    probs = torch.softmax(logits.double() / t, -1)[0].cpu()  # (classes,)
    top_p, top_i = probs.topk(min(_TOP, probs.numel()))
    classes = [str(c) for c in r.meta["classes"]]
    best = _character(classes[int(top_i[0])], float(conf[0]), r.calibration)
    return {
        "kind": DIGIT,
        "text": best["char"],
        "shown": "?" if best["rejected"] else best["char"],
        "confidence": best["confidence"],
        "characters": [best],
        "alternatives": [[classes[i], p] for p, i in zip(top_p.tolist(), top_i.tolist())],
        "rejected": best["rejected"],
        "reject_below": r.calibration.reject_below,
        "temperature": t,
    }


def _read_string(r: Reader, x: torch.Tensor) -> dict[str, Any]:
    """A uint8 ``(1, height, w)`` string read by prefix beam search of width ``confidence.BEAM``, as ``hwr predict
    --reject-below`` reads it: its confidence is the beam reading's probability
    (``hwr.tasks.strings.confidence.from_characters``), what a strings run's thresholds are fitted on."""
    (labels, conf), *_ = string_task.predict(
        r.model,
        r.params,
        r.model_state,
        [x],
        mean=r.meta["mean"],
        std=r.meta["std"],
        width=r.spec.width,
        beam=string_confidence.BEAM,
    )
    names = string_task.alphabet_of(r.meta)  # a strings_forms run reads separators too
    chars = [_character(names[d], float(p), r.calibration) for d, p in zip(labels, conf)]
    confidence = string_confidence.from_characters(conf)
    return {
        "kind": STRING,
        "text": "".join(c["char"] for c in chars),
        "shown": "".join("?" if c["rejected"] else c["char"] for c in chars),
        "confidence": confidence,
        "characters": chars,
        "rejected": not chars or confidence < r.calibration.reject_below,
        "reject_below": r.calibration.reject_below,
        "temperature": r.calibration.temperature,
    }
