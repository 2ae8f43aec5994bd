"""Self-training (pseudo-labelling) on a data set's unlabelled images: the run's own recipe, trained once without
it, is the teacher; every unlabelled image the teacher reads with softmax confidence >= the threshold joins the
training split under the class it read; the run then trains from the same start on both (Lee 2013; Xie et al.
2020 with a teacher the size of the student and no noise beyond the recipe's own augmentation).

Why: a class with one labelled image (a long-tailed domain's tail) cannot teach the domain's own way of writing
it; the unlabelled images of the same writers can, through the teacher's confident readings. No label of an
unlabelled image is ever read: the data sets hold none (``Dataset.unlabeled_images``).

``run`` (``hwr.tasks.digits.training``) trains the teacher into ``OUT/teacher`` (a run folder of its own, resumable
like any other) and passes ``pseudo_labels`` to ``prepare``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from hwr import runs
from hwr.data import augment as aug
from hwr.data.catalog import Dataset
from hwr.engine import train
from hwr.runs import RunError
from hwr.tasks.digits.config import RunConfig, SelfTrainConfig

__all__ = ["TEACHER", "PseudoLabels", "check_unlabeled", "pseudo_labels", "teacher_config"]

TEACHER = "teacher"  # the teacher's run folder inside the run's own


@dataclasses.dataclass(frozen=True)
class PseudoLabels:
    """The unlabelled images a teacher read confidently, the classes it read, and what to record of them."""

    images: torch.Tensor  # uint8 (K, 1, H, W)
    labels: torch.Tensor  # int64 (K,)
    record: dict[str, Any]


def check_unlabeled(ds: Dataset) -> None:
    """Refuse self-training on a data set without unlabelled images, before any teacher trains."""
    if ds.unlabeled_images is None or not len(ds.unlabeled_images):
        raise RunError(
            f"self-training needs unlabelled images, and {ds.name} has none: put them in PATH/unlabeled/ of a "
            "folder:PATH data set (optdigits-lt has its own), or turn it off (--self-train 0)"
        )


def teacher_config(config: RunConfig) -> RunConfig:
    """The teacher's config: the run's own with self-training off (the same seed, data, model and recipe)."""
    return dataclasses.replace(config, self_train=SelfTrainConfig())


def pseudo_labels(teacher: Path, images: torch.Tensor, classes: tuple[str, ...], threshold: float) -> PseudoLabels:
    """The images of ``images`` (uint8 ``(M, 1, H, W)``, on the device they will train on) that the trained run
    ``teacher`` reads with confidence >= ``threshold``, labelled by its reading. Pure: ``images`` is not changed;
    the same teacher gives the same selection. Raises ``RunError`` when the teacher reads other classes."""
    model, params, state, meta = runs.load_run(teacher, images.device)
    if tuple(meta["classes"]) != tuple(classes):
        raise RunError(f"teacher {teacher} reads classes {meta['classes']}, the run {list(classes)}: train it again")
    if not len(images):
        empty = torch.zeros(0, dtype=torch.int64, device=images.device)
        return PseudoLabels(images[:0], empty, _record(threshold, 0, empty, len(classes)))
    logits = train.predict(model, params, state, images, transform=aug.make_transform(None, meta["mean"], meta["std"]))
    confidence, read = logits.float().softmax(-1).max(-1)
    keep = confidence >= threshold
    return PseudoLabels(images[keep], read[keep], _record(threshold, len(images), read[keep], len(classes)))


def _record(threshold: float, pool: int, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    return {
        "teacher": TEACHER,
        "threshold": threshold,
        "unlabeled": pool,
        "kept": len(labels),
        "kept_per_class": torch.bincount(labels.cpu(), minlength=num_classes).tolist(),
    }
