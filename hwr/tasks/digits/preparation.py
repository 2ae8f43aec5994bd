"""What a training run derives from its ``RunConfig`` before the first step: its keys (one derivation from the
seed), the data and its train / validation / test split, the model (pretrained parameters transferred when
fine-tuning, ``hwr.runs.transfer``), the loss and the optimizer (``hwr.optim.from_config``).

Everything is created on the run's device: keys by ``random.key(seed, device=...)``, parameters by ``init`` on
those keys, model state by ``init_state(device=...)``, data by ``sources.load(device=...)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hwr import losses, models, optim, random, runs, tree
from hwr.config import DataSettings
from hwr.data import batches as bt
from hwr.data import catalog, clean, sources, splits
from hwr.models import Model
from hwr.runs import RunError
from hwr.tasks.digits import selftrain
from hwr.tasks.digits.config import RunConfig
from hwr.tasks.digits.finetune import anchored_mask, lr_multipliers

__all__ = ["Prepared", "RunKeys", "fresh_groups", "prepare", "read_config", "run_keys", "validation_set"]


class RunKeys(NamedTuple):
    """A run's keys, all from ``seed``: ``model`` (initial parameters), ``train`` (the state's key: per-step
    augmentation, dropout and mixing), ``data`` (batch order per epoch, and the post-training stage)."""

    model: random.Key
    train: random.Key
    data: random.Key


def run_keys(seed: int, device: str | torch.device | None = None) -> RunKeys:
    """The one key derivation of a run, on ``device``; the same numbers on every device."""
    k_model, k_rest = random.split(random.key(seed, device=device))
    k_train, k_data = random.split(k_rest)
    return RunKeys(k_model, k_train, k_data)


class Prepared(NamedTuple):
    """Everything a run derives from its config before the first step."""

    config: RunConfig
    model: Model
    optimizer: optim.GradientTransformation
    loss: losses.Loss
    params: Any
    model_state: Any
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    classes: tuple[str, ...]
    mean: float
    std: float
    steps_per_epoch: int
    reinitialised: list[str]
    counts: torch.Tensor  # (C,) training images per class, on the CPU
    source_params: Any  # the pretrained values the fine-tune starts from (None when training from scratch)
    anchored: Any  # bools shaped like params: True where the leaf came from the source
    keys: RunKeys  # on the run's device
    data_digest: str | None = None  # a user's folder or CSV: the images' identity (hwr.data.folders), recorded
    self_training: dict | None = None  # what the teacher's pseudo-labels added (hwr.tasks.digits.selftrain), recorded


def read_config(run_dir: str | Path) -> RunConfig:
    """The ``RunConfig`` of a digit run folder (``hwr.runs.read_config``: clear errors, old keys dropped)."""
    return runs.read_config(run_dir, RunConfig)


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int, key: random.Key) -> tuple[torch.Tensor, torch.Tensor]:
    if not limit or limit >= len(y):
        return x, y
    idx = random.permutation(key, len(y))[:limit]
    return x[idx], y[idx]


def prepare(
    config: RunConfig,
    data: DataSettings | None = None,
    *,
    device: str | torch.device = "cpu",
    teacher: Path | None = None,
) -> Prepared:
    """Load and split the data (from ``data``: where data sets live and whether they may be downloaded), build the
    model (transferring pretrained parameters when fine-tuning), the loss (class weights from training counts)
    and the optimizer, all on ``device``. With self-training on, ``teacher`` (the trained teacher's run folder)
    labels the data set's unlabelled images and its confident readings join the training split. Validates at the
    edges: unknown dataset, model or source run raise clear errors here, never inside the compiled step."""
    device = torch.device(device)
    ds = sources.load(config.dataset, data or DataSettings(), device=device)
    clean.validate(ds.train_images, ds.train_labels, ds.num_classes, name=f"{ds.name} train")
    clean.validate(ds.test_images, ds.test_labels, ds.num_classes, name=f"{ds.name} test")
    train_xy, val_xy, test_xy = _splits(config, ds, device)
    train_xy, self_training = _pseudo_labelled(config, ds, train_xy, teacher)
    mean, std = clean.normalization_stats(train_xy[0])
    keys = run_keys(config.seed, device)
    model, params, model_state, fresh = _model(config, ds.num_classes, keys, device)
    source_params = anchored = None
    if config.finetune is not None:
        anchored = anchored_mask(params, fresh)
        source_params = tree.map(lambda x: x.clone(), params)  # the anchor of L2-SP and WiSE-FT
    steps = bt.num_batches(len(train_xy[1]), config.batch_size, drop_last=True)
    if steps == 0:
        raise RunError(
            f"{len(train_xy[1])} training images make no full batch of {config.batch_size}; lower --batch-size"
        )
    optimizer = _optimizer(config, params, source_params, anchored, steps * config.epochs)
    counts = torch.bincount(train_xy[1].cpu(), minlength=ds.num_classes).clamp_min(1)
    loss = losses.make_loss(config.loss, counts, device=device, total_steps=steps * config.epochs)
    return Prepared(
        config,
        model,
        optimizer,
        loss,
        params,
        model_state,
        train_xy,
        val_xy,
        test_xy,
        ds.classes,
        mean,
        std,
        steps,
        fresh,
        counts,
        source_params,
        anchored,
        keys,
        (ds.provenance or {}).get("digest"),
        self_training,
    )


def _pseudo_labelled(config: RunConfig, ds: catalog.Dataset, train_xy: Pair, teacher: Path | None) -> tuple:
    """``(train, record)``: the training split with the teacher's confident readings of ``ds``'s unlabelled images
    added when self-training is on (``hwr.tasks.digits.selftrain``); as it is, and None, when it is off."""
    if not config.self_train.on:
        return train_xy, None
    selftrain.check_unlabeled(ds)
    if teacher is None:
        raise RunError("self-training needs its teacher run: hwr.tasks.digits.run trains it (OUT/teacher) first")
    pseudo = selftrain.pseudo_labels(teacher, ds.unlabeled_images, ds.classes, config.self_train.threshold)
    x, y = train_xy
    return (torch.cat([x, pseudo.images]), torch.cat([y, pseudo.labels])), pseudo.record


Pair = tuple[torch.Tensor, torch.Tensor]


def _splits(config: RunConfig, ds: catalog.Dataset, device: torch.device) -> tuple[Pair, Pair, Pair]:
    """``(train, val, test)`` image/label pairs: the validation protocol's split, then the smoke-test limits."""
    k_split = random.key(splits.SPLIT_SEED, device=device)
    train_xy, val_xy = _validation_split(config, ds, k_split)
    train_xy = _subset(*train_xy, config.limit_train, random.fold_in(k_split, 1))
    if config.limit_train:
        val_xy = _subset(*val_xy, max(config.limit_train // 5, 1), random.fold_in(k_split, 2))
    return train_xy, val_xy, test_subset(ds.test_images, ds.test_labels, config.limit_test)


def test_subset(x: torch.Tensor, y: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images a run of ``limit_test=limit`` is scored on (all where 0), by the same fixed key."""
    return _subset(x, y, limit, random.fold_in(random.key(splits.SPLIT_SEED, device=y.device), 3))


def validation_set(
    config: RunConfig, data: DataSettings | None = None, *, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """``(images, labels, classes)`` of the validation split a run of ``config`` held out (the same images
    ``prepare`` gives it, on ``device``), without building its model: what a trained run is calibrated on. A
    config whose protocol has no validation split (``heldout`` on a data set without one) raises ``RunError``."""
    device = torch.device(device)
    ds = sources.load(config.dataset, data or DataSettings(), device=device)
    _, (x, y), _ = _splits(config, ds, device)
    if len(y) == 0:
        raise RunError(f"the validation split of {config.dataset} under {config.validation!r} validation is empty")
    return x, y, ds.classes


def _model(
    config: RunConfig, num_classes: int, keys: RunKeys, device: torch.device
) -> tuple[Model, Any, Any, list[str]]:
    """The model for ``num_classes``, its initial parameters and state, and the names kept fresh: a fine-tune
    takes the source's family and config (unless ``config.model_config`` says otherwise) and every parameter and
    statistic of the same name and shape (``hwr.runs.transfer``)."""
    if config.finetune is not None:
        src_cfg = read_config(config.finetune.source)
        name = src_cfg.model
        base = config.model_config or src_cfg.model_config or models.config_from_dict(name)
    else:
        name = config.model
        base = config.model_config or models.config_from_dict(name)
    if getattr(base, "num_classes", num_classes) != num_classes:
        base = dataclasses.replace(base, num_classes=num_classes)
    model = models.get(name, base)
    params = model.init(random.fold_in(keys.model, 0))
    model_state = model.init_state(device=device)
    fresh: list[str] = []
    if config.finetune is not None:
        src_params, src_state = runs.read_source(config.finetune.source)  # on the CPU; transfer moves them
        reinit = fresh_groups(config.finetune.reinit, src_params, num_classes)
        params, fresh = runs.transfer(src_params, params, reinit=reinit)
        model_state, _ = runs.transfer(src_state, model_state, reinit=reinit)
    return model, params, model_state, fresh


def fresh_groups(reinit: tuple[str, ...], source: dict[str, torch.Tensor], num_classes: int) -> tuple[str, ...]:
    """The top-level groups a fine-tune initialises afresh: those ``reinit`` names, and the ``head`` when the
    source predicts another number of classes than the target has (the one mismatch that is never an error:
    it is recorded as ``head`` in the run's ``reinitialised``). Every other mismatch is ``runs.transfer``'s error."""
    head = source.get("head.kernel")
    if head is not None and head.shape[0] != num_classes and "head" not in reinit:
        return (*reinit, "head")
    return tuple(reinit)


def _optimizer(
    config: RunConfig, params: Any, source_params: Any, anchored: Any, total_steps: int
) -> optim.GradientTransformation:
    """``config.optim`` over ``total_steps``, with the fine-tune's learning-rate multipliers and L2-SP term."""
    ft = config.finetune
    mults = None
    if ft is not None and (ft.trainable != "all" or ft.backbone_lr_mult != 1.0):
        mults = lr_multipliers(params, ft.trainable, ft.backbone_lr_mult)
    extra = [optim.add_l2_toward(source_params, ft.l2sp, anchored)] if ft is not None and ft.l2sp > 0 else []
    return optim.from_config(config.optim, total_steps, mults, extra=extra)


def _validation_split(
    config: RunConfig, ds: catalog.Dataset, key: random.Key
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``(train, val)`` image/label pairs under ``config.validation``: ``split`` holds out a stratified
    ``val_fraction`` of the training set, ``heldout`` takes the data set's own validation split (disjoint from
    train and test), ``kfold`` holds out fold ``fold`` of a stratified ``folds``-fold partition."""
    x, y = ds.train_images, ds.train_labels
    if config.validation == "heldout":
        if ds.val_images is None:
            raise RunError(
                f"dataset {ds.name} has no held-out validation split; use validation split or kfold "
                "(a data set with one: optdigits, optdigits-lt)"
            )
        return (x, y), (ds.val_images, ds.val_labels)
    if config.validation == "kfold":
        fold = splits.stratified_folds(key, y, config.folds)
        is_val = fold == config.fold
        return (x[~is_val], y[~is_val]), (x[is_val], y[is_val])
    tr_idx, va_idx = splits.stratified_split(key, y, config.val_fraction)
    return (x[tr_idx], y[tr_idx]), (x[va_idx], y[va_idx])
