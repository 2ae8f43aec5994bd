"""What a training run derives from its ``RunConfig`` before the first step: its keys (one derivation from the
seed), the data and its train / validation / test split, the model (pretrained parameters transferred when
fine-tuning), the loss and the optimizer. ``hwr.tasks.digits.training`` re-exports ``prepare``, ``Prepared``,
``build_optimizer``, ``read_config`` and ``RunError``.

Everything is created on the run's device: keys by ``random.key(seed, device=...)``, parameters by ``init`` on
those keys, model state by ``init_state(device=...)``, data by ``sources.load(device=...)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hwr import checkpoint, losses, models, optim, random, tree
from hwr.config import OptimConfig, RunConfig, from_dict
from hwr.data import batches as bt
from hwr.data import clean, sources, splits
from hwr.errors import HwrError
from hwr.models import Model
from hwr.tasks.digits.finetune import anchored_mask, lr_multipliers, transfer

__all__ = ["SPLIT_SEED", "Prepared", "RunError", "RunKeys", "build_optimizer", "prepare", "read_config", "run_keys"]

CONFIG, CHECKPOINT = "config.json", "checkpoint.safetensors"
SPLIT_SEED = 20_240_601  # the train/val split is fixed across training seeds (hwr.data.strings follows it)


class RunError(HwrError, ValueError):
    """A run folder that cannot be used as asked (exists without --resume, missing files, wrong kind)."""


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


def build_optimizer(
    cfg: OptimConfig,
    total_steps: int,
    multipliers: Any = None,
    *,
    extra: Sequence[optim.GradientTransformation] = (),
) -> optim.GradientTransformation:
    """The optimizer a ``OptimConfig`` names, its schedule spanning ``total_steps``; ``extra`` gradient terms
    (L2-SP) are added after clipping, before the optimizer's own scaling."""
    schedule: optim.ScalarOrSchedule = {
        "constant": lambda: cfg.lr,
        "cosine": lambda: optim.cosine(cfg.lr, total_steps),
        "onecycle": lambda: optim.onecycle(cfg.lr, total_steps, warmup=cfg.warmup),
        "step": lambda: optim.step_decay(cfg.lr, max(total_steps // 3, 1)),
    }[cfg.schedule]()
    parts = [optim.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts += list(extra)
    if cfg.name == "sgd":
        parts.append(optim.sgd(schedule, cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay))
    elif cfg.name == "adamw":
        parts.append(optim.adamw(schedule, weight_decay=cfg.weight_decay))
    else:
        parts += [optim.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay else []
        parts.append(optim.adam(schedule))
    if multipliers is not None:
        parts.append(optim.scale_by_multipliers(multipliers))
    return optim.chain(*parts)


def read_config(run_dir: str | Path) -> RunConfig:
    """The ``RunConfig`` of a run folder, with clear errors for a missing folder or file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; train one with: hwr train --out {run_dir}")
    path = run_dir / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG}); pass the --out folder of hwr train")
    try:
        return from_dict(RunConfig, json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise RunError(f"{path} is not a valid run config: {e}") from None


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int, key: random.Key) -> tuple[torch.Tensor, torch.Tensor]:
    if not limit or limit >= len(y):
        return x, y
    idx = random.permutation(key, len(y))[:limit]
    return x[idx], y[idx]


def prepare(
    config: RunConfig,
    *,
    data_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    network: bool = True,
) -> Prepared:
    """Load and split the data, build the model (transferring pretrained parameters when fine-tuning), the
    loss (class weights from training counts) and the optimizer, all on ``device``. Validates at the edges:
    unknown dataset, model or source run raise clear errors here, never inside the compiled step."""
    device = torch.device(device)
    ds = sources.load(config.dataset, data_root, device=device, network=network)
    clean.validate(ds.train_images, ds.train_labels, ds.num_classes, name=f"{ds.name} train")
    clean.validate(ds.test_images, ds.test_labels, ds.num_classes, name=f"{ds.name} test")
    k_split = random.key(SPLIT_SEED, device=device)
    train_xy, val_xy = _validation_split(config, ds, k_split)
    train_xy = _subset(*train_xy, config.limit_train, random.fold_in(k_split, 1))
    if config.limit_train:
        val_xy = _subset(*val_xy, max(config.limit_train // 5, 1), random.fold_in(k_split, 2))
    test_xy = _subset(ds.test_images, ds.test_labels, config.limit_test, random.fold_in(k_split, 3))
    mean, std = clean.normalization_stats(train_xy[0])

    keys = run_keys(config.seed, device)
    pretrained: dict[str, torch.Tensor] = {}
    if config.finetune is not None:
        src = Path(config.finetune.source)
        src_cfg = read_config(src)
        pretrained, _ = checkpoint.load_flat(src / CHECKPOINT)  # on the CPU; transfer puts them on device
        name = src_cfg.model
        base = config.model_config or src_cfg.model_config or models.config_from_dict(name)
    else:
        name = config.model
        base = config.model_config or models.config_from_dict(name)
    if getattr(base, "num_classes", ds.num_classes) != ds.num_classes:
        base = dataclasses.replace(base, num_classes=ds.num_classes)
    model = models.get(name, base)
    params = model.init(random.fold_in(keys.model, 0))
    model_state = model.init_state(device=device)
    fresh: list[str] = []
    source_params = anchored = None
    if config.finetune is not None:
        src_params = {k[7:]: v for k, v in pretrained.items() if k.startswith("params.")}
        params, fresh = transfer(src_params, params, reinit=config.finetune.reinit)
        model_state, _ = transfer(
            {k[12:]: v for k, v in pretrained.items() if k.startswith("model_state.")}, model_state
        )
        anchored = anchored_mask(params, fresh)
        source_params = tree.map(lambda x: x.clone(), params)  # the anchor of L2-SP and WiSE-FT

    steps = bt.num_batches(len(train_xy[1]), config.batch_size, drop_last=True)
    if steps == 0:
        raise RunError(
            f"{len(train_xy[1])} training images make no full batch of {config.batch_size}; lower --batch-size"
        )
    mults = None
    if config.finetune is not None and (config.finetune.trainable != "all" or config.finetune.backbone_lr_mult != 1.0):
        mults = lr_multipliers(params, config.finetune.trainable, config.finetune.backbone_lr_mult)
    extra = []
    if config.finetune is not None and config.finetune.l2sp > 0:
        extra.append(optim.add_l2_toward(source_params, config.finetune.l2sp, anchored))
    optimizer = build_optimizer(config.optim, steps * config.epochs, mults, extra=extra)
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
    )


def _validation_split(
    config: RunConfig, ds: sources.Dataset, key: random.Key
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
