"""A training run as one library call: ``run(config, out_dir)`` prepares data, model and optimizer from a
``RunConfig``, compiles the pure step, fits with per-epoch validation and atomic checkpoints, evaluates on the
test split and writes the run folder:

    config.json               everything needed to rerun (RunConfig)
    checkpoint.safetensors    TrainState + metadata (epochs done, history, normalisation, classes)
    metrics.json              per-epoch records, final validation and test summaries, timings
    confusion.png, errors.png the test confusion matrix and a grid of misclassified test images

The CLI and the studies are thin over this module; it prints nothing (progress arrives through callbacks).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hwr import checkpoint, files, longtail, losses, metrics, models, optim, perf, random, train, tree
from hwr.config import OptimConfig, RunConfig, from_dict, to_dict
from hwr.data import augment as aug
from hwr.data import batches as bt
from hwr.data import clean, sources, splits
from hwr.finetune import anchored_mask, lr_multipliers, transfer
from hwr.models import Model

__all__ = [
    "Prepared",
    "RunError",
    "build_optimizer",
    "evaluate",
    "evaluate_run",
    "load_run",
    "make_batches",
    "make_step",
    "prepare",
    "run",
]

CONFIG, CHECKPOINT, METRICS = "config.json", "checkpoint.safetensors", "metrics.json"
_SPLIT_SEED = 20_240_601  # the train/val split is fixed across training seeds


class RunError(ValueError):
    """A run folder that cannot be used as asked (exists without --resume, missing files, wrong kind)."""


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


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int, key: random.Key) -> tuple[torch.Tensor, torch.Tensor]:
    if not limit or limit >= len(y):
        return x, y
    idx = random.permutation(key, len(y))[:limit].to(y.device)
    return x[idx], y[idx]


def _source_run(source: str) -> tuple[RunConfig, dict[str, torch.Tensor], dict[str, Any]]:
    src = Path(source)
    cfg = read_config(src)
    flat, meta = checkpoint.load_flat(src / CHECKPOINT)
    return cfg, flat, meta


def prepare(config: RunConfig, *, data_root: str | Path | None = None, device: str | torch.device = "cpu") -> Prepared:
    """Load and split the data, build the model (transferring pretrained parameters when fine-tuning), the
    loss (class weights from training counts) and the optimizer. Validates at the edges: unknown dataset,
    model or source run raise clear errors here, never inside the compiled step."""
    ds = sources.load(config.dataset, data_root, device=device)
    clean.validate(ds.train_images, ds.train_labels, ds.num_classes, name=f"{ds.name} train")
    clean.validate(ds.test_images, ds.test_labels, ds.num_classes, name=f"{ds.name} test")
    k_split = random.key(_SPLIT_SEED)
    train_xy, val_xy = _validation_split(config, ds, k_split)
    train_xy = _subset(*train_xy, config.limit_train, random.fold_in(k_split, 1))
    if config.limit_train:
        val_xy = _subset(*val_xy, max(config.limit_train // 5, 1), random.fold_in(k_split, 2))
    test_xy = _subset(ds.test_images, ds.test_labels, config.limit_test, random.fold_in(k_split, 3))
    mean, std = clean.normalization_stats(train_xy[0])

    k_model = random.split(random.key(config.seed))[0]
    pretrained: dict[str, torch.Tensor] = {}
    if config.finetune is not None:
        src_cfg, flat, _ = _source_run(config.finetune.source)
        name = src_cfg.model
        base = config.model_config or src_cfg.model_config or models.config_from_dict(name)
        pretrained = flat
    else:
        name = config.model
        base = config.model_config or models.config_from_dict(name)
    if getattr(base, "num_classes", ds.num_classes) != ds.num_classes:
        base = dataclasses.replace(base, num_classes=ds.num_classes)
    model = models.get(name, base)
    params = model.init(random.fold_in(k_model, 0))
    model_state = model.init_state()
    fresh: list[str] = []
    source_params = anchored = None
    if config.finetune is not None:
        src_params = {k[7:]: v for k, v in pretrained.items() if k.startswith("params.")}
        params, fresh = transfer(src_params, params, reinit=config.finetune.reinit)
        model_state, _ = transfer(
            {k[12:]: v for k, v in pretrained.items() if k.startswith("model_state.")}, model_state
        )
        anchored = anchored_mask(params, fresh)
    params = _to(params, device)
    model_state = _to(model_state, device)
    if config.finetune is not None:
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
            raise RunError(f"dataset {ds.name} has no held-out validation split; use validation split or kfold "
                           "(a data set with one: optdigits, optdigits-lt)")
        return (x, y), (ds.val_images, ds.val_labels)
    if config.validation == "kfold":
        fold = splits.stratified_folds(key, y, config.folds)
        is_val = fold == config.fold
        return (x[~is_val], y[~is_val]), (x[is_val], y[is_val])
    tr_idx, va_idx = splits.stratified_split(key, y, config.val_fraction)
    return (x[tr_idx], y[tr_idx]), (x[va_idx], y[va_idx])


def _to(t: Any, device: Any) -> Any:
    return tree.map(lambda x: x.to(device), t)


def evaluate(
    model: Model,
    params: Any,
    model_state: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    mean: float,
    std: float,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class figures and confusion of a model on a labelled set."""
    step = train.eval_step(model, num_classes, transform=aug.make_transform(None, mean, std))
    totals = None
    with torch.inference_mode():
        for b in bt.batches(None, images, labels, batch_size, shuffle=False, drop_last=False):
            totals = metrics.accumulate(totals, step(params, model_state, b))
    if totals is None:
        raise RunError("evaluation set is empty")
    return metrics.summarize(totals["confusion"], loss_sum=float(totals["loss_sum"]))


class _Checkpointer(train.Callback):
    """Saves the state and history atomically at the end of every epoch (the last good checkpoint)."""

    def __init__(self, out: Path, meta: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.out, self.meta, self.history = out, meta, list(history)

    def on_epoch_end(self, epoch: int, state: train.TrainState, record: dict[str, Any]) -> None:
        self.history.append(record)
        checkpoint.save(self.out / CHECKPOINT, state, {**self.meta, "epochs_done": epoch + 1, "history": self.history})


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


def make_step(config: RunConfig, p: Prepared) -> Callable[[train.TrainState, bt.Batch], Any]:
    """The pure train step ``run`` compiles for ``config``: augmentation, mixing, memory format and precision."""
    step_model = perf.channels_last(p.model) if config.memory_format == "channels_last" else p.model
    step_model = perf.autocast(step_model, "bfloat16") if config.precision == "bf16" else step_model
    return train.train_step(step_model, p.optimizer, p.loss, transform=_train_transform(config, p), mix=config.mix)


def _train_transform(config: RunConfig, p: Prepared) -> train.Transform:
    return aug.make_transform(None if config.augment.is_identity() else config.augment, p.mean, p.std)


def make_batches(config: RunConfig, p: Prepared, key: random.Key) -> Callable[[int], list[bt.Batch]]:
    """``epoch -> batches``: a keyed permutation per epoch, or ``config.sampling``'s class-aware draw."""
    x, y = p.train
    if config.sampling == "instance":
        return lambda epoch: bt.batches(random.fold_in(key, epoch), x, y, config.batch_size)
    power = bt.SAMPLING_POWERS[config.sampling]
    return lambda epoch: bt.sampled_batches(random.fold_in(key, epoch), x, y, config.batch_size, power=power)


def _post_train(config: RunConfig, p: Prepared, state: train.TrainState, key: random.Key) -> tuple[Any, dict]:
    """WiSE-FT, cRT, tau-normalisation and post-hoc logit adjustment as ``config`` asks (``hwr.longtail``).
    Returns the final params and a record of the choices made (the WiSE-FT alpha with its validation scores)."""
    params, record = state.params, {}
    num_classes = len(p.classes)
    if config.finetune is not None and config.finetune.wise:
        def score(candidate: Any) -> float:
            return evaluate(p.model, candidate, state.model_state, *p.val, num_classes, mean=p.mean, std=p.std)[
                "macro_f1"
            ]

        alpha, params, scores = longtail.wise_select(p.source_params, params, p.anchored, score)
        record["wise_alpha"], record["wise_val_macro_f1"] = alpha, {f"{a:g}": v for a, v in scores.items()}
    cc = config.classifier
    if cc.crt_epochs > 0:
        params = longtail.retrain_classifier(
            p.model, params, state.model_state, key, *p.train, transform=_train_transform(config, p),
            epochs=cc.crt_epochs, batch_size=config.batch_size, lr=cc.crt_lr, compile=config.compile,
        )
        record["crt_epochs"] = cc.crt_epochs
    params, done = longtail.adjust_head(params, p.counts, cc)
    return params, {**record, **done}


def run(
    config: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[train.Callback] = (),
    data_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    write_figures: bool = True,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` and return the contents of ``metrics.json``.

    With ``resume=True`` an interrupted run continues from its last checkpoint (end of the last finished epoch)
    and reaches the same result as an uninterrupted one: batches and step keys are functions of (seed, epoch,
    step), never of process history. Raises ``train.NonFiniteLoss`` if the loss turns NaN (the last good
    checkpoint stays) and ``RunError`` for a folder that cannot be used.
    """
    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    if resume:
        if not ckpt.is_file():
            raise RunError(f"nothing to resume in {out}: no {CHECKPOINT}; start it without --resume")
        saved = read_config(out)
        if to_dict(saved) != to_dict(config):
            raise RunError(f"--resume of {out} with a different config; resume with the saved one (omit options)")
    elif ckpt.exists() or (out / METRICS).exists():
        raise RunError(f"run folder {out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / CONFIG, to_dict(config))

    p = prepare(config, data_root=data_root, device=device)
    k_train, k_data = random.split(random.split(random.key(config.seed))[1])
    state = train.init_state(p.model, p.optimizer, k_train, params=p.params, model_state=p.model_state)
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        state = checkpoint.load(ckpt, state)
        meta = checkpoint.read_metadata(ckpt)
        start, history = int(meta.get("epochs_done", 0)), list(meta.get("history", []))
        if meta.get("complete"):
            return json.loads((out / METRICS).read_text())

    step = make_step(config, p)
    batches_of = make_batches(config, p, k_data)
    compile_seconds = 0.0
    if config.compile:
        step = train.compile(step)
        t0 = time.perf_counter()
        step(state, batches_of(start)[0])  # warm-up compile; the step is pure, so the result is simply dropped
        compile_seconds = time.perf_counter() - t0

    num_classes = len(p.classes)

    def validate(st: train.TrainState) -> dict[str, Any]:
        s = evaluate(p.model, st.params, st.model_state, *p.val, num_classes, mean=p.mean, std=p.std)
        return {
            "val_loss": s["loss"],
            "val_accuracy": s["accuracy"],
            "val_macro_f1": s["macro_f1"],
            "val_balanced_accuracy": s["balanced_accuracy"],
        }

    meta = {
        "model": p.model.name,
        "model_config": to_dict(p.model.config),
        "classes": list(p.classes),
        "mean": p.mean,
        "std": p.std,
        "compile_seconds": compile_seconds,
    }
    saver = _Checkpointer(out, meta, history)
    state, _ = train.fit(
        state,
        step,
        batches_of,
        epochs=config.epochs,
        evaluate=validate,
        callbacks=[*callbacks, saver],
        start_epoch=start,
    )
    history = saver.history
    params, post = _post_train(config, p, state, random.fold_in(k_data, -1))
    state = state._replace(params=params)

    test = evaluate(p.model, state.params, state.model_state, *p.test, num_classes, mean=p.mean, std=p.std)
    val = evaluate(p.model, state.params, state.model_state, *p.val, num_classes, mean=p.mean, std=p.std)
    train_seconds = sum(r["train_seconds"] for r in history)
    result = {
        "config": to_dict(config),
        "model": meta["model"],
        "model_config": meta["model_config"],
        "classes": list(p.classes),
        "num_params": tree.num_params(state.params),
        "epochs": history,
        "val": val,
        "test": test,
        "timing": {
            "compile_seconds": compile_seconds,
            "train_seconds": train_seconds,
            "samples_per_s": sum(r["samples_per_s"] for r in history) / max(len(history), 1),
        },
        "reinitialised": p.reinitialised,
        "post_training": post,
        "train_class_counts": p.counts.tolist(),
    }
    if write_figures:
        _figures(out, p, state, test)
    files.write_json(out / METRICS, result)
    checkpoint.save(ckpt, state, {**meta, "epochs_done": config.epochs, "history": history, "complete": True})
    return result


def _figures(out: Path, p: Prepared, state: train.TrainState, test: dict[str, Any]) -> None:
    from hwr import report  # figures only; keeps matplotlib out of the import path of workers that skip them

    report.save_confusion(torch.tensor(test["confusion"]), out / "confusion.png", classes=p.classes)
    x, y = p.test
    logits = train.predict(
        p.model, state.params, state.model_state, x, transform=aug.make_transform(None, p.mean, p.std)
    )
    pred = logits.argmax(-1)
    wrong = (pred != y).nonzero().flatten()[:40]
    titles = [f"{p.classes[int(y[i])]}->{p.classes[int(pred[i])]}" for i in wrong]
    report.save_image_grid(
        x[wrong],
        out / "errors.png",
        titles=titles,
        ncols=10,
        title=f"misclassified test images (true->predicted), {len(wrong)} shown",
    )


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Model, Any, Any, dict[str, Any]]:
    """``(model, params, model_state, metadata)`` of a trained run folder, checked against its architecture."""
    run_dir = Path(run_dir)
    read_config(run_dir)
    meta = checkpoint.read_metadata(run_dir / CHECKPOINT)
    if "model" not in meta:
        raise RunError(f"{run_dir / CHECKPOINT} has no model description; it was not written by hwr train")
    model = models.get(meta["model"], models.config_from_dict(meta["model"], meta["model_config"]))
    template = {"params": model.init(random.key(0)), "model_state": model.init_state()}
    loaded = checkpoint.load(run_dir / CHECKPOINT, template)
    params = _to(loaded["params"], device)
    return model, params, _to(loaded["model_state"], device), meta


def evaluate_run(
    run_dir: str | Path, dataset: str, *, split: str = "test", data_root: str | Path | None = None
) -> dict[str, Any]:
    """A trained run evaluated as is on ``dataset``'s ``test`` or held-out ``val`` split (the zero-shot baseline of
    a fine-tuning study). Raises ``RunError`` when the class counts disagree or the split does not exist."""
    model, params, state, meta = load_run(run_dir)
    ds = sources.load(dataset, data_root)
    if ds.num_classes != len(meta["classes"]):
        raise RunError(f"{run_dir} predicts {len(meta['classes'])} classes but {dataset} has {ds.num_classes}; "
                       f"fine-tune it first: hwr finetune --from {run_dir} --dataset {dataset} --out ...")
    if split == "val" and ds.val_images is None:
        raise RunError(f"dataset {dataset} has no held-out validation split")
    x, y = (ds.test_images, ds.test_labels) if split == "test" else (ds.val_images, ds.val_labels)
    return evaluate(model, params, state, x, y, ds.num_classes, mean=meta["mean"], std=meta["std"])
