"""The strings step: fixed-shape batches of synthetic strings and the pure train and evaluation steps over them.

``StringBatches`` renders each step's strings when it is reached (keyed by the batch index, so a resumed epoch sees
the same strings). ``ctc_objective`` is the task's part of the engine's one train step: ``x / 255``, normalise, the
pure CTC loss (``hwr.ctc``) over the frames that hold each string, greedy decoding for the exact-match count;
``hwr.engine.train.train_step`` adds ``model.apply``, the gradients and the optimizer, and compiles to one graph. ``eval_step`` returns sums (``hwr.metrics.string_sums``) that ``evaluate`` adds and divides once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from hwr import decode, metrics, optim, random
from hwr.ctc import ctc_loss
from hwr.data import strings as ds
from hwr.engine import train
from hwr.errors import InputError
from hwr.models import Model
from hwr.models.crnn import CRNNConfig

__all__ = [
    "StringBatch",
    "StringBatches",
    "as_batch",
    "ctc_objective",
    "eval_step",
    "evaluate",
    "exact",
    "frame_counts",
    "normalise",
    "train_step",
]


class StringBatch(NamedTuple):
    """A fixed-shape batch of strings: uint8 ``images`` ``(B, 1, H, W)``, int64 ``targets`` ``(B, S)`` (padded),
    ``lengths`` ``(B,)``, ``widths`` ``(B,)`` content widths in pixels, ``mask`` ``(B,)`` (False: padding)."""

    images: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor
    widths: torch.Tensor
    mask: torch.Tensor


def as_batch(s: ds.Strings) -> StringBatch:
    """Rendered strings as a batch with every row real (``mask`` all True)."""
    return StringBatch(s.images, s.targets, s.lengths, s.widths, torch.ones_like(s.lengths, dtype=torch.bool))


class StringBatches(Sequence):
    """``steps`` batches of fresh strings, batch ``i`` rendered from ``fold_in(key, i)`` when it is reached (so
    generation counts in the epoch's time, and a resumed epoch sees the same strings).

    ``prefetch``: iterating renders batch ``i + 1`` on a background thread while the caller trains on batch ``i``
    (torch releases the GIL inside its kernels, so the two overlap on a machine with a core to spare). The batches
    are the same either way (each depends on its key only); indexing always renders in the caller's thread."""

    def __init__(
        self,
        key: random.Key,
        pool: ds.DigitPool,
        spec: ds.StringSpec,
        batch_size: int,
        steps: int,
        *,
        prefetch: bool = False,
    ):
        self.key, self.pool, self.spec, self.batch_size, self.steps = key, pool, spec, batch_size, steps
        self.prefetch = prefetch

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> StringBatch:  # type: ignore[override]
        if not 0 <= i < self.steps:
            raise IndexError(i)
        return as_batch(ds.render(random.fold_in(self.key, i), self.pool, self.batch_size, self.spec))

    def __iter__(self) -> Iterator[StringBatch]:
        if not self.prefetch or self.steps < 2:
            return (self[i] for i in range(self.steps))
        return _ahead(self, self.steps)


def _ahead(batches: StringBatches, steps: int) -> Iterator[StringBatch]:
    """``batches[0 .. steps-1]`` with the next one rendering on one background thread while the caller holds the
    current one. Closing the generator early (a loop that stops) waits for the render in flight and ends the thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hwr-strings") as pool:
        ahead = pool.submit(batches.__getitem__, 0)
        try:
            for i in range(steps):
                batch = ahead.result()
                if i + 1 < steps:
                    ahead = pool.submit(batches.__getitem__, i + 1)
                yield batch
        finally:
            ahead.cancel()


def frame_counts(config: CRNNConfig, widths: torch.Tensor, t: int) -> torch.Tensor:
    """CTC input lengths ``(B,)``: the frames that cover each image's content ``widths``, within ``1 .. t``."""
    return config.frames(widths).clamp(1, t)


def exact(dec: decode.Decoded, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: the decoded string equals the target (fixed shapes, compiles)."""
    s = targets.shape[1]
    got = dec.labels[:, :s] if dec.labels.shape[1] >= s else F.pad(dec.labels, (0, s - dec.labels.shape[1]), value=-1)
    inside = torch.arange(s, device=targets.device)[None, :] < lengths[:, None]
    return (dec.lengths == lengths) & ((got == targets) | ~inside).all(1)


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images to the float model input: ``(x / 255 - mean) / std``."""
    return (images.float() / 255.0 - mean) / std


def ctc_objective(config: CRNNConfig, *, mean: float, std: float) -> train.Objective:
    """The strings task's objective for ``hwr.engine.train.train_step``: ``x / 255``, normalise; the pure CTC loss
    (mean over strings of the per-character loss, the frames past each string's content masked); ``correct`` an
    exact string by greedy decoding. The step's metrics are then the classifier's (``loss``, ``loss_sum``,
    ``correct`` exact strings, ``count``, ``grad_norm``), so ``hwr.engine.train.fit`` takes it unchanged."""

    def inputs(batch: StringBatch, k_augment: random.Key, k_mix: random.Key) -> tuple[torch.Tensor, None]:
        return normalise(batch.images, mean, std), None

    def loss(logits: torch.Tensor, batch: StringBatch, aux: None, step: torch.Tensor) -> torch.Tensor:
        m = batch.mask.to(torch.float32)
        frames = frame_counts(config, batch.widths, logits.shape[1])
        per = ctc_loss(
            logits, batch.targets, frames, batch.lengths, blank=config.blank, reduction="none", zero_infinity=True
        )
        per = per / batch.lengths.clamp_min(1).to(per.dtype)
        return (per * m).sum() / m.sum().clamp_min(1.0)

    def correct(logits: torch.Tensor, batch: StringBatch) -> torch.Tensor:
        dec = decode.greedy(logits, frame_counts(config, batch.widths, logits.shape[1]), blank=config.blank)
        return exact(dec, batch.targets, batch.lengths)

    return train.Objective(inputs, loss, correct)


def train_step(
    model: Model, optimizer: optim.GradientTransformation, *, mean: float, std: float
) -> Callable[[train.TrainState, StringBatch], tuple[train.TrainState, train.Metrics]]:
    """The pure strings step ``(state, batch) -> (state, metrics)``: ``hwr.engine.train.train_step`` over
    ``ctc_objective`` (``model`` is a crnn)."""
    return train.train_step(model, optimizer, ctc_objective(model.config, mean=mean, std=std))


def eval_step(model: Model, *, mean: float, std: float, max_length: int) -> Callable[..., train.Metrics]:
    """``(params, model_state, batch) -> sums``: ``loss_sum`` (per-character CTC), ``count`` and the string sums
    of ``hwr.metrics.string_sums`` from greedy decoding. Sum over batches, divide once."""
    c: CRNNConfig = model.config

    def step(params: Any, model_state: Any, batch: StringBatch) -> train.Metrics:
        logits, _ = model.apply(params, model_state, normalise(batch.images, mean, std), train=False)
        frames = frame_counts(c, batch.widths, logits.shape[1])
        per = ctc_loss(
            logits, batch.targets, frames, batch.lengths, blank=c.blank, reduction="none", zero_infinity=True
        ) / batch.lengths.clamp_min(1)
        dec = decode.greedy(logits, frames, blank=c.blank)
        sums = metrics.string_sums(dec.labels, dec.lengths, batch.targets, batch.lengths, max_length, batch.mask)
        return {"loss_sum": (per * batch.mask).sum(), "strings": batch.mask.sum(), **sums}

    return step


def evaluate(
    model: Model, params: Any, model_state: Any, strings: ds.Strings, *, mean: float, std: float, batch_size: int = 500
) -> dict[str, Any]:
    """CER, string accuracy, loss and figures by length of a model on a set of rendered strings."""
    step = eval_step(model, mean=mean, std=std, max_length=strings.targets.shape[1])
    totals = None
    n = len(strings.lengths)
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            part = ds.Strings(*(t[i : i + batch_size] for t in strings))
            totals = metrics.accumulate(totals, step(params, model_state, as_batch(part)))
    if totals is None:
        raise InputError("evaluation set is empty: pass at least one string")
    out = metrics.summarize_strings(totals)
    out["loss"] = float(totals["loss_sum"]) / max(int(totals["strings"]), 1)
    return out
