"""Which MNIST pretraining transfers best to the default study's target: each source variant (the ``fast`` recipe on
another pretraining data set, with another augmentation or epoch count) scored zero-shot on held-out optdigits
images and by the study's untuned start (``studies/optdigits_longtail.py``'s first enqueued point, from the
labelled images alone: without self-training, as these figures were first measured) fine-tuned from it on
long-tail draws x seeds. Every figure reads validation splits only: no run here reads a test split.

    python benchmarks/source_transfer.py --augment none standard [--pretrain-data mnist mnist:lowres=0.5]
        [--epochs 3] [--draws 0 1 2] [--seeds 0 1]

One source per pretraining data set x augmentation, in that order; the first is the reference of the paired column.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import harness
from hwr import files, recipes
from hwr.config import DataSettings
from hwr.data.augment import parse_augment
from hwr.data.catalog import check_name, parse_name
from hwr.engine.execution import Execution
from hwr.tasks import digits
from hwr.tasks.digits.config import SelfTrainConfig
from hwr.tasks.digits.training import evaluate_run
from hwr.tune import stats
from hwr.tune.spec import StudyContext
from hwr.tune.study import train_fresh
from studies import optdigits_longtail as study

__all__ = ["main"]

HELD_OUT = "optdigits:val=100"  # 1,000 balanced optdigits images that neither the long-tail draws' train nor test use


def _source(pretrain: str, augment: str, args: argparse.Namespace, data: DataSettings) -> tuple[Path, float]:
    """The ``fast`` recipe on ``pretrain`` with ``augment`` (and ``--epochs``), pretrained fresh: its folder and its
    validation accuracy on its own data set."""
    cfg = dataclasses.replace(
        recipes.get("fast", dataset=pretrain),
        augment=parse_augment(augment),
        epochs=args.epochs,
        limit_train=args.limit_train or 0,
    )
    prefix = "" if pretrain == "mnist" else f"{files.slug(pretrain)}-"
    folder = Path(args.out) / f"source-{prefix}{augment.replace(',', '_').replace('=', '')}-e{args.epochs}"
    shutil.rmtree(folder, ignore_errors=True)
    execution = Execution(candidate="inductor") if args.compile else Execution(compile=False)
    r = digits.run(cfg, folder, execution=execution, data=data, test_split=False, write_figures=False)
    assert r["test"] is None  # the choice never sees a test split
    return folder, r["val"]["accuracy"]


def _start(source: Path, draw: int, seed: int, args: argparse.Namespace, data: DataSettings) -> float:
    """The study's untuned start fine-tuned from ``source`` on long-tail draw ``draw``: its validation macro-F1."""
    target = f"{study.TARGET}:draw={draw}" if draw else None
    ctx = StudyContext(source_dir=source, out_dir=Path(args.out), data=data, dataset=target)
    start = study.suggest(optuna.trial.FixedTrial(study.INITIAL[0]), ctx)
    cfg = dataclasses.replace(start, seed=seed, self_train=SelfTrainConfig())  # the labelled images alone
    if args.finetune_epochs:
        cfg = dataclasses.replace(cfg, epochs=args.finetune_epochs)
    out = Path(args.out) / f"start-{source.name}-draw{draw}-seed{seed}"
    r = train_fresh(cfg, out, Execution(compile=False), data, final_validation_only=True)
    assert r["test"] is None
    return r["val"]["macro_f1"]


def _row(pretrain: str, augment: str, args: argparse.Namespace, data: DataSettings) -> dict[str, Any]:
    source, mnist_val = _source(pretrain, augment, args, data)
    zero_shot = evaluate_run(source, HELD_OUT, split="val", data=data)["macro_f1"]
    starts = [_start(source, d, s, args, data) for d in args.draws for s in args.seeds]
    return {
        "pretrain_data": pretrain,
        "augment": augment,
        "epochs": args.epochs,
        "mnist_val_accuracy": mnist_val,
        "zero_shot_macro_f1": zero_shot,
        "start_val_macro_f1": starts,
        "start_mean": statistics.fmean(starts),
    }


def _paired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row after the first gains ``start_minus_first``: the paired 95% interval (``hwr.tune.stats``) of its
    start's validation macro-F1 minus the first row's, over the same draws and seeds (None for fewer than 2)."""
    base = rows[0]["start_val_macro_f1"]
    for r in rows[1:]:
        ok = len(base) > 1
        r["start_minus_first"] = stats.paired_interval(r["start_val_macro_f1"], base)._asdict() if ok else None
    return rows


def _interval(iv: dict[str, Any] | None) -> str:
    if iv is None:
        return ""
    return f"{100 * iv['mean']:+.2f} [{100 * iv['low']:+.2f}, {100 * iv['high']:+.2f}] points"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--augment", nargs="+", default=["none", "standard"], help="one source per augmentation spec")
    ap.add_argument(
        "--pretrain-data", nargs="+", default=["mnist"], help="pretraining data sets, e.g. mnist mnist:lowres=0.5"
    )
    ap.add_argument("--epochs", type=int, default=3, help="pretraining epochs (the fast recipe's 3)")
    ap.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="optdigits-lt draws")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="runs/source_transfer")
    ap.add_argument("--limit-train", type=int, default=None, help="pretrain on N MNIST images (smoke runs)")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="override the start's 20 epochs (smoke runs)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="pretrain eagerly (smoke runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    for spec in args.augment:
        try:
            parse_augment(spec)
        except ValueError as e:
            ap.error(str(e))
    for name in args.pretrain_data:
        try:
            check_name(name)
            parse_name(name)
        except (KeyError, ValueError) as e:
            ap.error(str(e).strip("\"'"))
    from hwr.cli import environment

    environment.start()
    data = DataSettings()
    rows = _paired([_row(p, spec, args, data) for p in args.pretrain_data for spec in args.augment])
    n = len(args.draws) * len(args.seeds)
    harness.print_table(
        f"MNIST sources -> optdigits (validation only; start: mean of {n} runs, paired by draw and seed with the first)",
        ("pretraining", "MNIST val acc", "zero-shot macro-F1", "start val macro-F1", "min", "start - first"),
        [
            (
                r["augment"] if r["pretrain_data"] == "mnist" else f"{r['pretrain_data']}, {r['augment']}",
                f"{r['mnist_val_accuracy']:.4f}",
                f"{r['zero_shot_macro_f1']:.4f}",
                f"{r['start_mean']:.4f}",
                f"{min(r['start_val_macro_f1']):.4f}",
                _interval(r.get("start_minus_first")),
            )
            for r in rows
        ],
    )
    if args.json:
        harness.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
