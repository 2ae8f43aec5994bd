"""``hwr train | evaluate | finetune | predict``: parse the flags and dispatch to the task's commands through the
registry ``TASK_COMMANDS`` (a run folder names its task: ``hwr.runs.task_of``; a new run's recipe or family does):
``hwr.cli.digits`` and ``hwr.cli.strings``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from types import ModuleType

import torch

from hwr import recipes, runs
from hwr.cli import UsageError, environment
from hwr.data import catalog, folders
from hwr.data.batches import SAMPLING_POWERS
from hwr.engine import autotune, runtime
from hwr.engine.execution import MEMORY_FORMATS, PRECISIONS, Execution
from hwr.tasks.digits.config import VALIDATIONS

__all__ = [
    "DEFAULT_RECIPE",
    "RUN_FLAGS",
    "TASK_COMMANDS",
    "add_parsers",
    "check_dataset",
    "check_resume",
    "data_root_arg",
    "device_arg",
    "device_of",
    "execution_of",
]

DEFAULT_RECIPE = "seed"
# what ``hwr train`` without --recipe says it runs (the figures: the README's recipe table, 2 CPU cores)
DEFAULT_RECIPE_NOTE = (
    "no --recipe: training the default 'seed' recipe (the tutorial's CNN, 10 epochs on mnist; about 17 minutes on "
    "2 CPU cores); --recipe fast reaches 99.2% in about a minute"
)
# flags that say what a run is: a resumed run keeps its config.json, so each is refused with --resume
RUN_FLAGS = ("recipe", "model", "dataset", "source", "epochs", "batch_size", "lr", "augment", "seed",
             "limit_train", "limit_test")  # fmt: skip

TASK_COMMANDS = {"digits": "hwr.cli.digits", "strings": "hwr.cli.strings"}  # a task's commands, by task name


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a recipe into a run folder")
    p.add_argument(
        "--recipe",
        default=None,
        choices=sorted(recipes.RECIPES),
        help=f"named config (hwr/recipes.py; default {DEFAULT_RECIPE}, the tutorial's CNN; fast: about a minute)",
    )
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
    p.set_defaults(func=_train)

    p = sub.add_parser("finetune", help="fine-tune a trained run on another dataset")
    p.add_argument("--from", dest="source", required=True, help="run folder of the pretrained model")
    p.add_argument("--dataset", default="optdigits-lt", help="the target data set (hwr data list, folder:PATH)")
    p.add_argument(
        "--trainable",
        default="all",
        choices=("head", "last", "all"),
        help="what trains: the head, the last block too, all",
    )
    p.add_argument("--backbone-lr-mult", type=float, default=1.0, help="the backbone's learning rate / the head's")
    p.add_argument(
        "--class-weights",
        default="none",
        choices=("none", "inverse", "effective", "logit_adjust"),
        help="loss weighting by class frequency (effective: Cui et al.; logit_adjust: Menon et al.)",
    )
    _longtail_args(p)
    _common(p)
    p.set_defaults(func=lambda args: _commands("digits").cmd_finetune(args))

    p = sub.add_parser("evaluate", help="metrics of a trained run on a dataset's test split")
    p.add_argument("run", help="run folder")
    p.add_argument("--dataset", default=None, help="default: the dataset it was trained on")
    data_root_arg(p)
    p.add_argument("--skip-bad", action="store_true", help="folder:/csv: data: skip unreadable or blank images")
    p.add_argument("--out", default=None, help="folder for the figures (the reliability diagram); default RUN/evaluate")
    device_arg(p)
    p.set_defaults(func=_evaluate)

    _predict_parser(sub)


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify real image files (PNG, JPEG, ...)")
    p.add_argument("--run", default=None, help="run folder of the trained model (a digits or a strings run)")
    p.add_argument("--model", dest="old_run", default=None, help="the old spelling of --run (removed in 0.4)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...), one digit or one string each")
    p.add_argument(
        "--save-input", default=None, help="folder to write the image the model saw, one per input (names kept apart)"
    )
    _reject_args(p)
    _format_args(p)
    device_arg(p)
    p.set_defaults(func=_predict)


_FORMAT_FLAGS = ("length", "lengths", "pattern")  # hwr predict's reading formats (strings runs)


def _format_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading formats (strings runs): the most probable reading of this form")
    g.add_argument("--length", type=int, default=None, metavar="N", help="exactly N characters (separators count)")
    g.add_argument("--lengths", default=None, metavar="N,M", help="one of these lengths, e.g. 5,9")
    g.add_argument(
        "--pattern",
        default=None,
        metavar="REGEX",
        help=r"a regular expression over the run's characters: \d{5}(-\d{4})?",
    )


def _reject_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rejection: '?' beside a reading a person should check")
    g.add_argument(
        "--reject-below", type=float, default=None, metavar="P", help="mark readings whose confidence is below P"
    )
    g.add_argument(
        "--target-error",
        type=float,
        default=None,
        metavar="E",
        help="the threshold whose accepted validation readings have error <= E (0.01: 1%%): stored in the run "
        "(hwr calibrate), else chosen on its validation split and stored",
    )
    data_root_arg(g, "--target-error: data root of the validation split")


def _longtail_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("long-tail levers")
    g.add_argument("--tau", type=float, default=1.0, help="logit-adjustment tau (1: balanced softmax)")
    g.add_argument("--defer", type=float, default=0.0, help="deferred re-weighting: share of steps before weights")
    g.add_argument(
        "--sampling",
        default="instance",
        choices=tuple(SAMPLING_POWERS),
        help="batch sampling: by instance, by the square root of class counts, class-balanced",
    )
    g.add_argument("--mixup", type=float, default=0.0, help="mixup Beta alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=0.0, help="CutMix Beta alpha (0: off)")
    g.add_argument("--mix-prob", type=float, default=1.0, help="share of samples mixed")
    g.add_argument("--reinit", default="", help="comma list of groups to initialise afresh (head, fc)")
    g.add_argument("--l2sp", type=float, default=0.0, help="L2-SP strength toward the source weights")
    g.add_argument("--wise", action="store_true", help="WiSE-FT: interpolate with the source, alpha on validation")
    g.add_argument("--crt-epochs", type=int, default=0, help="classifier re-training epochs (cRT) after training")
    g.add_argument("--crt-lr", type=float, default=1e-2, help="learning rate of the cRT head re-training")
    g.add_argument("--tau-norm", type=float, default=0.0, help="tau-normalise the head rows (0: off)")
    g.add_argument("--posthoc-tau", type=float, default=0.0, help="post-hoc logit adjustment at inference (0: off)")
    g.add_argument(
        "--self-train",
        type=float,
        default=0.0,
        metavar="THRESHOLD",
        help="self-training on the data set's unlabelled images (a folder's unlabeled/): a teacher run first, its "
        "readings with confidence >= THRESHOLD (e.g. 0.9) join the training split (0: off)",
    )
    g.add_argument(
        "--validation",
        default="split",
        choices=VALIDATIONS,
        help="split: stratified share of the training set; heldout: the dataset's own; kfold",
    )
    g.add_argument("--folds", type=int, default=5, help="--validation kfold: the number of folds")
    g.add_argument("--fold", type=int, default=0, help="--validation kfold: the fold held out")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder to write (config, metrics, checkpoint, figures)")
    p.add_argument("--epochs", type=int, default=None, help="epochs to train (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per step (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    p.add_argument("--augment", default=None, help="preset (none, light, standard, strong) or k=v,... list")
    p.add_argument("--seed", type=int, default=None, help="the run's key: initialisation, batches, augmentation")
    p.add_argument("--limit-train", type=int, default=None, help="use only N training images (smoke runs)")
    p.add_argument("--limit-test", type=int, default=None, help="score only N test images (smoke runs)")
    data_root_arg(p)
    p.add_argument("--skip-bad", action="store_true", help="folder:/csv: data: skip unreadable or blank images")
    g = p.add_argument_group("execution (where and how it runs; not part of the run's config)")
    device_arg(g)
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
    g.add_argument(
        "--compile-candidate",
        default=None,
        choices=[c.name for c in autotune.CUDA_CANDIDATES],
        help="pin one compile configuration instead of autotuning (reproduces a figure exactly)",
    )


def device_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device`` as every command spells it (``device_of`` resolves it)."""
    p.add_argument("--device", default=None, help="auto (default: CUDA when available, else CPU), cpu, cuda, cuda:N")


def data_root_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "data root") -> None:
    """``--data-root``, defaulting to ``$HWR_DATA`` (read here, at the CLI edge) or ``~/.cache/hwr``."""
    p.add_argument(
        "--data-root",
        default=str(environment.read().data.root),
        help=f"{what} (default $HWR_DATA or ~/.cache/hwr)",
    )


def device_of(spec: str | None) -> torch.device:
    """The device ``--device`` names, refused in one line when this machine lacks it; ``meta`` (shapes without
    data: the library's tests use it to catch tensors made in the wrong place) cannot run a command."""
    try:
        device = runtime.resolve_device(spec or "auto")
    except ValueError as e:  # unknown name, or no such device here
        raise UsageError(str(e)) from None
    if device.type == "meta":
        raise UsageError(
            "device 'meta' holds shapes but no data, so it cannot train, evaluate or predict; use "
            "--device cpu, cuda or auto"
        )
    return device


def execution_of(args: argparse.Namespace, base: Execution | None = None) -> Execution:
    """The ``Execution`` the flags ask for over ``base`` (a resumed run's saved one); the device checked here."""
    changes = {
        "device": args.device,
        "compile": False if args.no_compile else args.compile,
        "precision": args.precision,
        "memory_format": args.memory_format,
        "tf32": args.tf32,
        "candidate": args.compile_candidate,
    }
    execution = dataclasses.replace(base or Execution(), **{k: v for k, v in changes.items() if v is not None})
    device_of(execution.device)
    return execution


def check_dataset(name: str | None) -> str | None:
    """A data set name the commands accept, checked before anything is loaded or written: a known name (with valid
    parameters), or ``folder:PATH`` / ``csv:FILE`` whose path exists (a mistyped one must not fetch or cache the
    other data set of ``hwr data compare`` first). Returns the name a run's config stores: a user's path made
    absolute (``folders.absolute_name``), so ``--resume`` and ``hwr evaluate RUN`` work from any folder."""
    if name is None:
        return None
    try:
        kind = catalog.check_name(name)
    except ValueError as e:  # unknown name or bad parameters (optdigits-lt:ratio=...)
        raise UsageError(str(e)) from None
    if kind in ("folder", "csv"):
        path = Path(name.partition(":")[2].strip()).expanduser()
        if not (path.is_dir() if kind == "folder" else path.is_file()):
            what = "folder holding train/<class>/ (or test/<class>/) images" if kind == "folder" else "CSV file"
            raise UsageError(f"{name}: {path} does not exist or is not a {what}; check the path")
    return folders.absolute_name(name)


def _commands(task: str) -> ModuleType:
    """The CLI module of ``task``'s commands (``TASK_COMMANDS``)."""
    return importlib.import_module(TASK_COMMANDS[task])


def _train_task(args: argparse.Namespace) -> str:
    """The task ``hwr train`` runs: a resumed folder's own, else strings for a strings recipe or ``--model crnn``."""
    if args.resume:
        return runs.task_of(args.out)
    return (
        "strings"
        if getattr(recipes.RECIPES.get(args.recipe), "task", None) == "strings" or args.model == "crnn"
        else "digits"
    )


def check_resume(args: argparse.Namespace) -> None:
    """``--resume`` continues the folder's saved config, so a flag that would change what the run is (``RUN_FLAGS``)
    is refused in one line rather than silently ignored; where and how it runs (--device, --compile, ...) may change.
    """
    given = [f for f in RUN_FLAGS if getattr(args, f, None) is not None]
    if args.resume and given:
        flag = "--" + ("from" if given[0] == "source" else given[0].replace("_", "-"))
        why = " (the learning-rate schedule is fixed by the epoch count)" if given[0] == "epochs" else ""
        raise UsageError(
            f"--resume continues {args.out} with its saved config.json, so {flag} cannot change{why}; drop "
            f"{flag}, or start a new run with another --out"
        )


def _train(args: argparse.Namespace) -> int:
    check_resume(args)
    if not args.resume and args.recipe is None:
        if args.model is None:
            print(f"hwr: {DEFAULT_RECIPE_NOTE}", flush=True)  # stdout: a note, not an error (stderr is one line)
        args.recipe = DEFAULT_RECIPE
    return _commands(_train_task(args)).cmd_train(args)


def _evaluate(args: argparse.Namespace) -> int:
    return _commands(runs.task_of(args.run)).cmd_evaluate(args)


def run_of_predict(args: argparse.Namespace) -> str:
    """The run folder ``hwr predict`` reads: ``--run``, or ``--model`` (its spelling before 0.3, when ``--model``
    also named a family in ``hwr train``) with one deprecation line."""
    if args.run is not None and args.old_run is not None:
        raise UsageError("give the run folder once: --run RUN (--model is its old spelling)")
    if args.old_run is not None:
        print("hwr: --model RUN is now --run RUN; --model will be removed in 0.4", file=sys.stderr)
        return args.old_run
    if args.run is None:
        raise UsageError("hwr predict needs the trained model's run folder: hwr predict --run RUN IMAGE ...")
    return args.run


def _predict(args: argparse.Namespace) -> int:
    from hwr.cli.calibrate import check_reject  # it imports this module

    args.run = run_of_predict(args)
    check_reject(args)
    task = runs.task_of(args.run)
    given = [f"--{f}" for f in _FORMAT_FLAGS if getattr(args, f, None) is not None]
    if given and task != "strings":
        raise UsageError(
            f"{given[0]} constrains how a string is read, and {args.run} is a {task} run (one digit per image); "
            "drop it, or predict with a strings run (hwr train --recipe strings)"
        )
    return _commands(task).cmd_predict(args)
