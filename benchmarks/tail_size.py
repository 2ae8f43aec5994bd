"""How many labelled images a tail class needs: the default study's untuned start (``studies/optdigits_longtail.py``'s
first enqueued point) fine-tuned from one MNIST source on long-tail profiles of optdigits that differ only in their
imbalance ratio (``optdigits-lt:ratio=R``: the same head class of 85 images, the tail 1 image at ratio 100, 4 at 20,
17 at 5), over draws x seeds; per profile its validation and test macro-F1 and the confusion it makes most.

It is the diagnostic behind the README's *What bounds the target*: it reads the test split to explain a figure,
never to choose one (the study and every lever are chosen on validation).

    python benchmarks/tail_size.py [--ratios 100 20 5] [--self-train 0 0.9] [--draws 0 1 2] [--seeds 0 1]
        [--source RUN] [--json PATH]

``--self-train 0 0.9`` adds, per ratio, the start self-trained on the draw's unlabelled pool (the images the draw
leaves out, ``hwr.tasks.digits.selftrain``) at threshold 0.9, paired with the start as it is.

Without ``--source`` the ``fast`` recipe is pretrained on MNIST first (as ``benchmarks/source_transfer.py`` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import harness
from hwr import recipes
from hwr.config import DataSettings
from hwr.data.sources import load
from hwr.engine.execution import Execution
from hwr.tasks import digits
from hwr.tasks.digits.config import SelfTrainConfig
from hwr.tasks.digits.training import evaluate_run
from hwr.tune import stats
from hwr.tune.spec import StudyContext
from hwr.tune.study import train_fresh
from studies import optdigits_longtail as study

__all__ = ["main", "top_confusion"]


def top_confusion(confusion: list[list[int]], classes: tuple[str, ...]) -> tuple[str, str, int]:
    """The most frequent error of a confusion matrix (rows true, columns predicted, both in ``classes``' order):
    ``(true, predicted, count)``, the first such pair in row order on a tie; ``("-", "-", 0)`` when nothing is
    misread."""
    c = torch.tensor(confusion)
    c.fill_diagonal_(0)
    if int(c.max()) == 0:
        return "-", "-", 0
    i, j = divmod(int(torch.argmax(c)), c.shape[1])
    return classes[i], classes[j], int(c[i, j])


def _source(args: argparse.Namespace, data: DataSettings) -> Path:
    """``--source``, or the ``fast`` recipe pretrained on MNIST into ``OUT/source`` (validation only)."""
    if args.source:
        return Path(args.source)
    cfg = dataclasses.replace(recipes.get("fast"), limit_train=args.limit_train or 0)
    out = Path(args.out) / "source"
    execution = Execution(candidate="inductor") if args.compile else Execution(compile=False)
    digits.run(cfg, out, execution=execution, data=data, test_split=False, write_figures=False)
    return out


def _run(source: Path, ratio: int, pseudo: float, draw: int, seed: int, args: argparse.Namespace, data) -> dict:
    """The start fine-tuned on ``optdigits-lt:ratio=ratio,draw=draw`` with ``seed`` (self-training on the draw's
    unlabelled pool at threshold ``pseudo``; 0: off): both splits' figures (the confusion on the test split, rows
    true, in the data set's class order)."""
    target = f"{study.TARGET}:ratio={ratio},draw={draw}"
    ctx = StudyContext(source_dir=source, out_dir=Path(args.out), data=data, dataset=target)
    start = study.suggest(optuna.trial.FixedTrial(study.INITIAL[0]), ctx)
    cfg = dataclasses.replace(start, seed=seed, self_train=SelfTrainConfig(pseudo))
    if args.finetune_epochs:
        cfg = dataclasses.replace(cfg, epochs=args.finetune_epochs)
    out = Path(args.out) / f"start-ratio{ratio}{f'-self{pseudo:g}' if pseudo else ''}-draw{draw}-seed{seed}"
    val = train_fresh(cfg, out, Execution(compile=False), data, final_validation_only=True)["val"]
    test = evaluate_run(out, cfg.dataset, split="test", data=data)
    return {
        "draw": draw,
        "seed": seed,
        "val_macro_f1": val["macro_f1"],
        "test_macro_f1": test["macro_f1"],
        "confusion": test["confusion"],
    }


def _paired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row after the first of its ratio gains ``vs_first``: the paired 95% intervals (``hwr.tune.stats``) of
    its test and validation macro-F1 minus that first row's, over the same draws and seeds (None for one run)."""
    first: dict[int, dict[str, Any]] = {}
    for r in rows:
        base = first.setdefault(r["ratio"], r)
        if base is r or len(r["runs"]) < 2:
            continue
        r["vs_first"] = {key: _pair(r["runs"], base["runs"], f"{key}_macro_f1") for key in ("test", "val")}
    return rows


def _pair(runs: list[dict], base: list[dict], key: str) -> dict[str, Any]:
    return stats.paired_interval([x[key] for x in runs], [x[key] for x in base])._asdict()


def _interval(vs: dict[str, Any] | None) -> str:
    if vs is None:
        return ""
    return ", ".join(
        f"{k} {100 * vs[k]['mean']:+.2f} [{100 * vs[k]['low']:+.2f}, {100 * vs[k]['high']:+.2f}]"
        for k in ("test", "val")
    )


def _profile(ratio: int, data: DataSettings) -> tuple[list[int], tuple[str, ...]]:
    """The training split's per-class counts at ratio ``ratio``, head to tail (draw 0; every draw has the same),
    and the data set's classes."""
    ds = load(f"{study.TARGET}:ratio={ratio}", data)
    counts = torch.bincount(ds.train_labels, minlength=len(ds.classes)).sort(descending=True).values.tolist()
    return counts, ds.classes


def _row(source: Path, ratio: int, pseudo: float, args: argparse.Namespace, data: DataSettings) -> dict[str, Any]:
    train_counts, classes = _profile(ratio, data)
    runs = [_run(source, ratio, pseudo, d, s, args, data) for d in args.draws for s in args.seeds]
    for r in runs:
        r["top_error"] = "{} read as {} ({})".format(*top_confusion(r["confusion"], classes))
    errors = torch.stack([torch.tensor(r["confusion"]) for r in runs]).sum(0)
    true, pred, n = top_confusion(errors.tolist(), classes)
    return {
        "ratio": ratio,
        "self_train": pseudo,
        "train_counts": train_counts,
        "runs": runs,
        "test_mean": statistics.fmean(r["test_macro_f1"] for r in runs),
        "test_lowest": min(r["test_macro_f1"] for r in runs),
        "val_mean": statistics.fmean(r["val_macro_f1"] for r in runs),
        "top_error": f"{true} read as {pred}",
        "top_error_count": n,
    }


def _print(rows: list[dict[str, Any]], source: Path, n: int) -> None:
    harness.print_table(
        f"the study's start from {source} on optdigits-lt profiles ({n} runs each: draws x seeds; test read to explain)",
        (
            "ratio",
            "self-train",
            "train images",
            "test macro-F1",
            "lowest",
            "validation",
            "most frequent error",
            "vs first",
        ),
        [
            (
                str(r["ratio"]),
                f"{r['self_train']:g}" if r["self_train"] else "off",
                f"{sum(r['train_counts'])} ({r['train_counts'][0]} ... {r['train_counts'][-1]})",
                f"{r['test_mean']:.4f}",
                f"{r['test_lowest']:.4f}",
                f"{r['val_mean']:.4f}",
                f"{r['top_error']} ({r['top_error_count']})",
                _interval(r.get("vs_first")),
            )
            for r in rows
        ],
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=int, nargs="+", default=[100, 20, 5], help="optdigits-lt imbalance ratios")
    ap.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="optdigits-lt draws")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--self-train",
        type=float,
        nargs="+",
        default=[0.0],
        help="self-training thresholds, one row each per ratio (0: off); rows after the first are paired with it",
    )
    ap.add_argument("--source", default=None, help="a pretrained run folder (default: pretrain `fast` on MNIST)")
    ap.add_argument("--out", default="runs/tail_size")
    ap.add_argument("--limit-train", type=int, default=None, help="pretrain on N MNIST images (smoke runs)")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="override the start's 20 epochs (smoke runs)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="pretrain eagerly (smoke runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if any(r < 1 for r in args.ratios):
        ap.error(f"--ratios are imbalance ratios (largest / smallest class), at least 1; got {args.ratios}")
    if any(not 0 <= t < 1 for t in args.self_train):
        ap.error(f"--self-train thresholds lie in [0, 1) (0: off); got {args.self_train}")
    if args.source and not (Path(args.source) / "config.json").is_file():
        ap.error(f"--source {args.source}: not a run folder (no config.json); give a pretrained run, e.g. runs/fast")
    from hwr.cli import environment

    environment.start()
    data = DataSettings()
    source = _source(args, data)
    rows = _paired([_row(source, r, t, args, data) for r in args.ratios for t in args.self_train])
    _print(rows, source, len(args.draws) * len(args.seeds))
    if args.json:
        harness.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
