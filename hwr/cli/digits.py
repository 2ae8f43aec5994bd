"""The digit task's side of ``hwr train | finetune | evaluate | predict``: build the ``RunConfig`` the flags ask for,
call ``hwr.tasks.digits``, print tables. ``hwr.cli.train`` parses and dispatches here by the run's task."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from rich.markup import escape

from hwr import recipes, report
from hwr.cli import UsageError, calibrate, environment, read_each, save_inputs, train_guarded
from hwr.cli.train import check_dataset, device_of, execution_of
from hwr.data import augment as aug
from hwr.data import digits, folders, sources
from hwr.data.catalog import Dataset
from hwr.data.mix import MixConfig
from hwr.engine.execution import Execution
from hwr.losses import LossConfig
from hwr.optim import OptimConfig
from hwr.runs import read_calibration, saved_execution
from hwr.tasks import digits as task
from hwr.tasks.digits.calibrate import confidence
from hwr.tasks.digits.config import ClassifierConfig, FinetuneConfig, RunConfig, SelfTrainConfig

__all__ = ["cmd_evaluate", "cmd_finetune", "cmd_predict", "cmd_train"]


def _overrides(args: argparse.Namespace, base: RunConfig) -> RunConfig:
    changes = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
        "augment": aug.parse_augment(args.augment) if args.augment is not None else None,
        "optim": dataclasses.replace(base.optim, lr=args.lr) if args.lr is not None else None,
    }
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def _run(config: RunConfig, args: argparse.Namespace, execution: Execution, *, resume: bool = False) -> int:
    out = Path(args.out)
    data = environment.data_at(args.data_root, skip_bad=args.skip_bad)
    if folders.is_user_data(config.dataset):  # checked and converted before the run folder is written
        _skipped(sources.load(config.dataset, data))
    result = train_guarded(
        lambda: task.run(
            config,
            out,
            execution=execution,
            resume=resume,
            callbacks=[report.Progress(config.epochs)],
            data=data,
            draw=report.draw_run,
        ),
        args,
    )
    if isinstance(result, int):
        return result
    fresh = result.get("reinitialised") or []
    if config.finetune is not None and fresh:
        report.console.print(f"initialised afresh (not from the source): {', '.join(fresh)}")
    t = result["test"]
    report.console.print(report.metrics_table(t, title=escape(f"test: {config.dataset}"), classes=result["classes"]))
    timing, used = result["timing"], result["execution"]
    step = used.get("candidate", "eager" if used.get("compile") is False else "-")
    report.console.print(
        f"test accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}  "
        f"train {timing['train_seconds']:.1f}s + compile {timing['compile_seconds']:.1f}s  "
        f"on {used['device']} ({used['device_name']}), step {step}  -> {escape(str(out))}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.source is not None:
        raise UsageError(
            "--from starts a strings run (--recipe strings) from a digit CNN; to fine-tune a digit "
            "run use: hwr finetune --from RUN"
        )
    out = Path(args.out)
    if args.resume:
        config = task.read_config(out)
        return _run(config, args, execution_of(args, saved_execution(out)), resume=True)
    execution = execution_of(args)
    base = recipes.get(args.recipe, dataset=check_dataset(args.dataset))
    if args.model is not None and args.model != base.model:
        base = dataclasses.replace(base, model=args.model, model_config=None)
    return _run(_overrides(args, base), args, execution)


def cmd_finetune(args: argparse.Namespace) -> int:
    execution = execution_of(args)
    dataset = check_dataset(args.dataset)
    task.read_config(args.source)  # clear error for a bad --from before any data is loaded
    base = RunConfig(
        dataset=dataset,
        epochs=20,
        batch_size=32,
        val_fraction=0.2,
        optim=OptimConfig("adamw", 1e-3, "cosine", weight_decay=1e-4),
        loss=LossConfig(weighting=args.class_weights, tau=args.tau, defer=args.defer),
        finetune=FinetuneConfig(
            str(Path(args.source).resolve()),  # stored absolute: --resume and study evaluations from any folder
            args.trainable,
            args.backbone_lr_mult,
            reinit=tuple(x for x in args.reinit.split(",") if x),
            l2sp=args.l2sp,
            wise=args.wise,
        ),
        validation=args.validation,
        folds=args.folds,
        fold=args.fold,
        sampling=args.sampling,
        mix=MixConfig(mixup=args.mixup, cutmix=args.cutmix, prob=args.mix_prob),
        classifier=ClassifierConfig(args.crt_epochs, args.crt_lr, args.tau_norm, args.posthoc_tau),
        self_train=SelfTrainConfig(args.self_train),
        recipe="finetune",
    )
    return _run(_overrides(args, base), args, execution)


def cmd_evaluate(args: argparse.Namespace) -> int:
    config = task.read_config(args.run)
    name = check_dataset(args.dataset or config.dataset)
    device = device_of(args.device)
    model, params, state, meta = task.load_run(args.run, device)
    data = environment.data_at(args.data_root, skip_bad=args.skip_bad)
    ds = sources.load(name, data, device=device, require_train=False, only_test=True)
    if folders.is_user_data(name):  # the user's own images: matched to the run's classes by name
        ds = folders.on_classes(ds, meta["classes"], whose=str(args.run))
        _skipped(ds)
    if ds.num_classes != len(meta["classes"]):
        raise UsageError(
            f"{args.run} predicts {len(meta['classes'])} classes but {name} has {ds.num_classes}; "
            f"fine-tune it first: hwr finetune --from {args.run} --dataset {name} --out ..."
        )
    s = task.evaluate(
        model, params, state, ds.test_images, ds.test_labels, ds.num_classes, mean=meta["mean"], std=meta["std"]
    )
    title = escape(f"{args.run} on {name} test ({s['count']} images)")
    report.console.print(report.metrics_table(s, title=title, classes=list(ds.classes)))
    test = ((ds.provenance or {}).get("splits") or {}).get("test") or {}
    if test.get("origin") == "drawn":  # no test/ (or split column): the images scored are a share of train/
        report.console.print(
            escape(
                f"test: {test['about']}; a test/ folder, or CSV rows of split test, names the images to score instead"
            )
        )
    calibrate.evaluate_digits(args, model, params, state, meta, ds.test_images, ds.test_labels, f"{name} test")
    return 0


def _skipped(ds: Dataset) -> None:
    """Say how many of a user's image files ``--skip-bad`` skipped."""
    skipped = (ds.provenance or {}).get("skipped") or []
    if skipped:
        report.err_console.print(
            f"[yellow]skipped {len(skipped)} unreadable or blank image(s)[/] (--skip-bad), first: "
            + escape(skipped[0]["file"])
        )


def cmd_predict(args: argparse.Namespace) -> int:
    device = device_of(args.device)
    model, params, state, meta = task.load_run(args.run, device)
    classes = meta["classes"]
    stored = read_calibration(args.run)
    t = stored.temperature if stored is not None else 1.0
    reject = calibrate.reject_threshold(args, "digits", device)  # (P, where it came from) or None
    inputs, readable, failed = read_each(args.images, lambda path: digits.mnist_style(digits.load_image(path)))
    if not inputs:
        return 2
    x = torch.stack(inputs)  # (N, 1, 28, 28) uint8
    if args.save_input:
        save_inputs(args.save_input, readable, x, "_28x28.png")
    transform = aug.make_transform(None, meta["mean"], meta["std"])
    with torch.inference_mode():
        logits = model.apply(params, state, transform(None, x.to(device)), train=False)[0].float()
    _, conf = confidence(logits, t)  # the calibrated top probability, as the thresholds were chosen
    probs = torch.softmax(logits.double() / t, -1).cpu()
    top_p, top_i = probs.topk(min(3, probs.shape[-1]), dim=-1)
    from rich.markup import escape
    from rich.table import Table

    title = f"calibrated predictions of {args.run} (T {t:.3f})" if stored else f"predictions of {args.run} (softmax)"
    table = Table(title=escape(title))  # calibrated: softmax(logits / T), T from calibration.json
    table.add_column("image")
    for r in range(top_p.shape[1]):
        table.add_column(f"#{r + 1}", justify="right")
    if reject is not None:
        table.add_column("check")
        report.console.print(reject[1], highlight=False)
    for k, (path, ps, idx) in enumerate(zip(readable, top_p.tolist(), top_i.tolist())):
        flag = ["?" if float(conf[k]) < reject[0] else ""] if reject is not None else []
        cells = [f"{classes[i]}  {p:.3f}" for p, i in zip(ps, idx)]
        table.add_row(escape(Path(path).name), *map(escape, cells), *flag)  # "photo [copy].png" is no markup
    report.console.print(table)
    return 2 if failed else 0  # non-zero when any file could not be read
