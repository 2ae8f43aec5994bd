"""Real images of digit strings to what the strings model reads, and the reading.

``normalise_string`` maps a real string's ink map (``hwr.data.digits.load_image``: any size, colour or polarity)
to the geometry the training strings are rendered with; ``predict`` pads a list of them into batches of one
padded width each (a reading never depends on the other files read with it), masks the frames past each one's
content and decodes greedily, by prefix beam search, or by the beam search a reading format constrains
(``hwr.pattern``), with per-character confidences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hwr import decode, tree
from hwr.data import strings as ds
from hwr.errors import InputError
from hwr.models import Model
from hwr.models.crnn import CRNNConfig
from hwr.pattern import Automaton
from hwr.tasks.strings.step import frame_counts, normalise

__all__ = ["MAX_WIDTH", "normalise_string", "predict"]

MAX_WIDTH = 4096  # widest normalised input predict accepts (pixels at height 32): about 200 digits
_SPEC = ds.StringSpec()


def normalise_string(ink: torch.Tensor, spec: ds.StringSpec = _SPEC) -> torch.Tensor:
    """A real string's float ink map ``(H, W)`` in ``[0, 1]`` (``hwr.data.digits.load_image``) -> uint8
    ``(1, spec.height, w)`` as the training strings are made: cropped to the ink (pixels above ``INK`` of the
    peak), its height scaled to what the rendered strings' ink boxes measure (``ink_height + BLEED``) and centred, the width scaled alike (antialiased), margins of
    the training strings' mean, ``w`` the content width."""
    if not isinstance(ink, torch.Tensor) or ink.dim() != 2:
        raise InputError(f"normalise_string takes a 2-D float ink map (H, W), got {getattr(ink, 'shape', type(ink))}")
    x = ink.detach().float().cpu().clamp(0.0, 1.0)
    peak = float(x.max())
    if peak <= 0.0:
        raise InputError(f"image of shape {tuple(x.shape)} holds no ink")
    on = x > ds.INK * peak
    rows, cols = on.any(1).nonzero().squeeze(1), on.any(0).nonzero().squeeze(1)
    crop = x[int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1] / peak
    h, w = crop.shape
    f = (spec.ink_height + ds.BLEED) / h
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    margin = round(sum(spec.margin) / 2)
    if nw + 2 * margin > MAX_WIDTH:
        raise InputError(
            f"the ink is {w}x{h} pixels: {nw} wide at height {nh}, over the {MAX_WIDTH}-pixel limit; "
            "crop the image to one line of digits"
        )
    patch = F.interpolate(crop[None, None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    out = torch.zeros(spec.height, nw + 2 * margin)
    top = round((spec.height - nh) / 2)
    out[top : top + nh, margin : margin + nw] = patch[0, 0].clamp(0.0, 1.0)
    return (out * 255.0).round().to(torch.uint8)[None]


def predict(
    model: Model,
    params: Any,
    model_state: Any,
    images: Sequence[torch.Tensor],
    *,
    mean: float,
    std: float,
    width: int = 0,
    beam: int = 0,
    automaton: Automaton | None = None,
) -> list[tuple[list[int], list[float]]]:
    """Read uint8 ``(1, height, w_i)`` strings (``normalise_string``) of any widths: each is padded with
    background to at least ``width`` (the training width: short strings then see the padding they were trained
    with), a multiple of the frame stride, and read in a batch of the strings padded to the same width, so its
    reading is the one it gets alone (the BiGRU's backward pass sees the padding); the frames past its content
    are masked. Returns
    ``(labels, per-label confidence)`` per image. ``beam`` > 0 decodes by prefix beam search of that width
    (confidence: the per-label geometric mean), else greedily (the highest probability over each label's frames).
    With ``automaton`` (``hwr.pattern.automaton`` over the run's alphabet: ``--length``, ``--pattern``), the
    reading is the most probable one it accepts (``hwr.decode.constrained_beam_search``, ``beam`` or 16 wide);
    an image whose frames hold no accepted reading reads as ``[]``, which the pattern itself never accepts then."""
    c: CRNNConfig = model.config
    padded = [-(-max(int(im.shape[-1]), width, c.stride) // c.stride) * c.stride for im in images]
    out: list[tuple[list[int], list[float]]] = [([], [])] * len(images)
    for w in sorted(set(padded)):  # one batch per padded width: a reading never depends on the other files
        group = [i for i, pw in enumerate(padded) if pw == w]
        batch = [images[i] for i in group]
        for i, r in zip(group, _read(model, params, model_state, batch, w, mean, std, beam, automaton), strict=True):
            out[i] = r
    return out


def _read(
    model: Model,
    params: Any,
    model_state: Any,
    images: Sequence[torch.Tensor],
    w: int,
    mean: float,
    std: float,
    beam: int,
    automaton: Automaton | None,
) -> list[tuple[list[int], list[float]]]:
    """``predict`` of images that all pad to width ``w``: the BiGRU's backward pass reads the padding, so images
    are batched only with others of their own padded width (the padding each would get alone)."""
    c: CRNNConfig = model.config
    widths = torch.tensor([int(im.shape[-1]) for im in images])
    device = tree.leaves(params)[0].device
    x = torch.stack([F.pad(im, (0, w - im.shape[-1])) for im in images]).to(device)  # (N, 1, H, w) uint8
    with torch.inference_mode():
        logits, _ = model.apply(params, model_state, normalise(x, mean, std), train=False)
        frames = frame_counts(c, widths.to(logits.device), logits.shape[1])
        if automaton is not None:
            dec = decode.constrained_beam_search(logits, frames, blank=c.blank, automaton=automaton, beam=beam or 16)
        elif beam > 0:
            dec = decode.beam_search(logits, frames, blank=c.blank, beam=beam)
        else:
            dec = decode.greedy(logits, frames, blank=c.blank)
    labels = decode.to_lists(dec.labels, dec.lengths)
    conf = dec.confidence.cpu().tolist()
    return [(lab, conf[i][: len(lab)]) for i, lab in enumerate(labels)]
