"""``hwr train | evaluate | finetune | predict``: parse, call ``hwr.tasks.digits.training``, print."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from hwr import recipes, report
from hwr.cli import UsageError, read_each, train_guarded
from hwr.config import VALIDATIONS, ClassifierConfig, FinetuneConfig, OptimConfig, RunConfig
from hwr.data import augment as aug
from hwr.data import digits, sources
from hwr.data.batches import SAMPLING_POWERS
from hwr.data.mix import MixConfig
from hwr.engine import runtime
from hwr.engine.execution import MEMORY_FORMATS, PRECISIONS, Execution
from hwr.losses import LossConfig
from hwr.tasks.digits import training as experiment


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a recipe into a run folder")
    p.add_argument("--recipe", default="seed", choices=sorted(recipes.RECIPES))
    p.add_argument("--model", default=None, help="model family (cnn, rnn, vit); default: the recipe's")
    p.add_argument("--dataset", default=None, help="dataset name (hwr data list); default mnist")
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        help="strings runs: start from a trained digit run's conv stem (by name and shape)",
    )
    _common(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a trained run on another dataset")
    p.add_argument("--from", dest="source", required=True, help="run folder of the pretrained model")
    p.add_argument("--dataset", default="optdigits-lt")
    p.add_argument("--trainable", default="all", choices=("head", "last", "all"))
    p.add_argument("--backbone-lr-mult", type=float, default=1.0)
    p.add_argument("--class-weights", default="none", choices=("none", "inverse", "effective", "logit_adjust"))
    _longtail_args(p)
    _common(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="metrics of a trained run on a dataset's test split")
    p.add_argument("run", help="run folder")
    p.add_argument("--dataset", default=None, help="default: the dataset it was trained on")
    p.add_argument(
        "--data-root",
        default=str(runtime.data_settings_from_env().root),  # the CLI reads $HWR_DATA
        help="data root (default $HWR_DATA or ~/.cache/hwr)",
    )
    _device_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify real image files (PNG, JPEG, ...)")
    p.add_argument("--model", required=True, help="run folder")
    p.add_argument("images", nargs="+")
    p.add_argument("--save-input", default=None, help="folder to write the 28x28 image the model saw")
    _device_arg(p)
    p.set_defaults(func=cmd_predict)


def _longtail_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("long-tail levers")
    g.add_argument("--tau", type=float, default=1.0, help="logit-adjustment tau (1: balanced softmax)")
    g.add_argument("--defer", type=float, default=0.0, help="deferred re-weighting: share of steps before weights")
    g.add_argument("--sampling", default="instance", choices=tuple(SAMPLING_POWERS))
    g.add_argument("--mixup", type=float, default=0.0, help="mixup Beta alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=0.0, help="CutMix Beta alpha (0: off)")
    g.add_argument("--mix-prob", type=float, default=1.0, help="share of samples mixed")
    g.add_argument("--reinit", default="", help="comma list of groups to initialise afresh (head, fc)")
    g.add_argument("--l2sp", type=float, default=0.0, help="L2-SP strength toward the source weights")
    g.add_argument("--wise", action="store_true", help="WiSE-FT: interpolate with the source, alpha on validation")
    g.add_argument("--crt-epochs", type=int, default=0, help="classifier re-training epochs (cRT) after training")
    g.add_argument("--crt-lr", type=float, default=1e-2)
    g.add_argument("--tau-norm", type=float, default=0.0, help="tau-normalise the head rows (0: off)")
    g.add_argument("--posthoc-tau", type=float, default=0.0, help="post-hoc logit adjustment at inference (0: off)")
    g.add_argument(
        "--validation",
        default="split",
        choices=VALIDATIONS,
        help="split: stratified share of the training set; heldout: the dataset's own; kfold",
    )
    g.add_argument("--folds", type=int, default=5)
    g.add_argument("--fold", type=int, default=0)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder to write (config, metrics, checkpoint, figures)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--augment", default=None, help="preset (none, light, standard, strong) or k=v,... list")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--limit-train", type=int, default=None, help="use only N training images (smoke runs)")
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument(
        "--data-root",
        default=str(runtime.data_settings_from_env().root),  # the CLI reads $HWR_DATA
        help="data root (default $HWR_DATA or ~/.cache/hwr)",
    )
    g = p.add_argument_group("execution (where and how it runs; not part of the run's config)")
    _device_arg(g)
    c = g.add_mutually_exclusive_group()
    c.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="compile the step, the fastest equivalent configuration autotuned (the default)",
    )
    c.add_argument("--no-compile", action="store_true", help="run the step eagerly")
    g.add_argument("--precision", default=None, choices=PRECISIONS, help="bf16: autocast (default fp32)")
    g.add_argument(
        "--memory-format",
        default=None,
        choices=MEMORY_FORMATS,
        help="auto (default): autotune picks (channels-last where faster); channels_last: NHWC "
        "convolutions (same function); contiguous",
    )
    g.add_argument("--tf32", action="store_true", default=None, help="TF32 matmuls and convolutions on CUDA")


def _device_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--device", default=None, help="auto (default: CUDA when available, else CPU), cpu, cuda, cuda:N")


def _device(spec: str | None) -> torch.device:
    try:
        return runtime.resolve_device(spec or "auto")
    except ValueError as e:  # unknown name, or no such device here
        raise UsageError(str(e)) from None


def _execution(args: argparse.Namespace, base: Execution | None = None) -> Execution:
    """The ``Execution`` the flags ask for over ``base`` (a resumed run's saved one); the device checked here."""
    changes = {
        "device": args.device,
        "compile": False if args.no_compile else args.compile,
        "precision": args.precision,
        "memory_format": args.memory_format,
        "tf32": args.tf32,
    }
    execution = dataclasses.replace(base or Execution(), **{k: v for k, v in changes.items() if v is not None})
    _device(execution.device)
    return execution


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


def _check_dataset(name: str | None) -> None:
    if name is None:
        return
    try:
        sources.check_name(name)
    except ValueError as e:  # unknown name or bad parameters (optdigits-lt:ratio=...)
        raise UsageError(str(e)) from None


def _run(config: RunConfig, args: argparse.Namespace, execution: Execution, *, resume: bool = False) -> int:
    out = Path(args.out)
    result = train_guarded(
        lambda: experiment.run(
            config,
            out,
            execution=execution,
            resume=resume,
            callbacks=[report.Progress(config.epochs)],
            data_root=args.data_root,
            network=runtime.data_settings_from_env().network,
            draw=report.draw_run,
        ),
        out,
    )
    if isinstance(result, int):
        return result
    t = result["test"]
    report.console.print(report.metrics_table(t, title=f"test: {config.dataset}", classes=result["classes"]))
    timing, used = result["timing"], result["execution"]
    step = used.get("candidate", "eager" if used.get("compile") is False else "-")
    report.console.print(
        f"test accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}  "
        f"train {timing['train_seconds']:.1f}s + compile {timing['compile_seconds']:.1f}s  "
        f"on {used['device']} ({used['device_name']}), step {step}  -> {out}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hwr.cli import strings  # the strings task: --recipe strings, --model crnn, a strings run to resume

    if strings.wants_train(args):
        return strings.cmd_train(args, _execution(args))
    if args.source is not None:
        raise UsageError(
            "--from starts a strings run (--recipe strings) from a digit CNN; to fine-tune a digit "
            "run use: hwr finetune --from RUN"
        )
    out = Path(args.out)
    if args.resume:
        config = experiment.read_config(out)
        return _run(config, args, _execution(args, experiment.saved_execution(out)), resume=True)
    execution = _execution(args)
    _check_dataset(args.dataset)
    base = recipes.get(args.recipe, dataset=args.dataset)
    if args.model is not None and args.model != base.model:
        base = dataclasses.replace(base, model=args.model, model_config=None)
    return _run(_overrides(args, base), args, execution)


def cmd_finetune(args: argparse.Namespace) -> int:
    execution = _execution(args)
    _check_dataset(args.dataset)
    experiment.read_config(args.source)  # clear error for a bad --from before any data is loaded
    base = RunConfig(
        dataset=args.dataset,
        epochs=20,
        batch_size=32,
        val_fraction=0.2,
        optim=OptimConfig("adamw", 1e-3, "cosine", weight_decay=1e-4),
        loss=LossConfig(weighting=args.class_weights, tau=args.tau, defer=args.defer),
        finetune=FinetuneConfig(
            args.source,
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
        recipe="finetune",
    )
    return _run(_overrides(args, base), args, execution)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hwr.cli import strings

    if strings.sr.is_strings_run(args.run):
        return strings.cmd_evaluate(args, _device(args.device))
    config = experiment.read_config(args.run)
    name = args.dataset or config.dataset
    _check_dataset(name)
    device = _device(args.device)
    model, params, state, meta = experiment.load_run(args.run, device)
    ds = sources.load(name, args.data_root, device=device, network=runtime.data_settings_from_env().network)
    if ds.num_classes != len(meta["classes"]):
        raise UsageError(
            f"{args.run} predicts {len(meta['classes'])} classes but {name} has {ds.num_classes}; "
            f"fine-tune it first: hwr finetune --from {args.run} --dataset {name} --out ..."
        )
    s = experiment.evaluate(
        model, params, state, ds.test_images, ds.test_labels, ds.num_classes, mean=meta["mean"], std=meta["std"]
    )
    report.console.print(
        report.metrics_table(s, title=f"{args.run} on {name} test ({s['count']} images)", classes=list(ds.classes))
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hwr.cli import strings

    if strings.sr.is_strings_run(args.model):
        return strings.cmd_predict(args, _device(args.device))
    device = _device(args.device)
    model, params, state, meta = experiment.load_run(args.model, device)
    classes = meta["classes"]
    inputs, readable, failed = read_each(args.images, lambda path: digits.mnist_style(digits.load_image(path)))
    if not inputs:
        return 2
    x = torch.stack(inputs)  # (N, 1, 28, 28) uint8
    if args.save_input:
        from PIL import Image

        folder = Path(args.save_input)
        folder.mkdir(parents=True, exist_ok=True)
        for path, img in zip(readable, x):
            Image.fromarray(img[0].numpy()).save(folder / f"{Path(path).stem}_28x28.png")
    transform = aug.make_transform(None, meta["mean"], meta["std"])
    with torch.inference_mode():
        probs = torch.softmax(model.apply(params, state, transform(None, x.to(device)), train=False)[0], -1).cpu()
    top_p, top_i = probs.topk(min(3, probs.shape[-1]), dim=-1)
    from rich.table import Table

    table = Table(title=f"predictions of {args.model}")
    table.add_column("image")
    for r in range(top_p.shape[1]):
        table.add_column(f"#{r + 1}", justify="right")
    for path, ps, idx in zip(readable, top_p.tolist(), top_i.tolist()):
        table.add_row(Path(path).name, *[f"{classes[i]}  {p:.3f}" for p, i in zip(ps, idx)])
    report.console.print(table)
    return 2 if failed else 0  # non-zero when any file could not be read
