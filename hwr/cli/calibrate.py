"""``hwr calibrate RUN [--target-error E ...]``: fit a trained run's temperature (digits) and reject thresholds on
its validation split into the run's ``calibration.json`` (``hwr.tasks.digits.calibrate``,
``hwr.tasks.strings.confidence``); and the calibration side of ``hwr evaluate`` (ECE and NLL before and after the
temperature, the risk-coverage table with its AURC, what the stored thresholds keep, a reliability diagram) and of
``hwr predict`` (``--reject-below P`` / ``--target-error E``: a "?" beside a reading a person should check)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from hwr import calibration, report, runs
from hwr.cli import UsageError, environment
from hwr.cli.train import data_root_arg, device_arg, device_of
from hwr.report import selective
from hwr.runs import Calibration
from hwr.tasks.digits import calibrate as digits_calibration
from hwr.tasks.strings import confidence as strings_confidence

__all__ = [
    "RELIABILITY_FIGURE",
    "add_parsers",
    "check_reject",
    "cmd_calibrate",
    "evaluate_digits",
    "evaluate_strings",
    "evaluation_folder",
    "reject_threshold",
]

RELIABILITY_FIGURE = "reliability.png"  # what hwr evaluate draws into its --out folder
STRINGS_CONFIDENCE = {  # hwr.tasks.strings.confidence.KINDS, as a reader says them
    "chars": "product of the per-character confidences",
    "path": "best-path probability",
    "min_frame": "lowest frame probability",
    "reading": "probability of the greedy reading",
    "beam": "probability of the beam-search reading",
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit a run's temperature and reject thresholds on its validation split")
    p.add_argument("run", help="run folder of a trained model (a digits or a strings run)")
    p.add_argument(
        "--target-error",
        type=float,
        action="append",
        default=None,
        metavar="E",
        help="also choose the reject threshold whose accepted validation readings have error <= E (0.01: 1%%); "
        "repeat for several",
    )
    data_root_arg(p)
    device_arg(p)
    p.set_defaults(func=cmd_calibrate)


def _target(value: float, flag: str = "--target-error") -> float:
    if not 0.0 < value < 1.0:
        raise UsageError(f"{flag} must lie strictly between 0 and 1, got {value:g}; e.g. {flag} 0.01 for 1%")
    return float(value)


def check_reject(args: argparse.Namespace) -> None:
    """``hwr predict``'s reject flags checked before anything is loaded: one of them at most, ``P`` in
    ``[0, 1]``, ``E`` in ``(0, 1)``."""
    p, e = getattr(args, "reject_below", None), getattr(args, "target_error", None)
    if p is not None and e is not None:
        raise UsageError(
            "give --reject-below P (a threshold of your own) or --target-error E (the threshold chosen on the "
            "validation split for that error), not both"
        )
    if p is not None and not 0.0 <= p <= 1.0:
        raise UsageError(f"--reject-below must be a confidence in [0, 1], got {p:g}; e.g. --reject-below 0.9")
    if e is not None:
        _target(e)


def _module(task: str) -> Any:
    return strings_confidence if task == "strings" else digits_calibration


def _threshold_rows(c: Calibration) -> list[selective.ThresholdRow]:
    return [(t, v["threshold"], v["coverage"], v["error"], v["coverage"], v["error"]) for t, v in c.thresholds.items()]


def cmd_calibrate(args: argparse.Namespace) -> int:
    targets = [_target(e) for e in args.target_error or []]
    task = runs.task_of(args.run)
    device = device_of(args.device)
    data = environment.data_at(args.data_root)
    c = _module(task).calibrate(args.run, targets=targets, data=data, device=device)
    f = c.figures
    if task == "strings":
        report.console.print(
            f"{c.n:,} validation strings: exact {100 * f['string_accuracy']:.2f}%, confidence "
            f"({STRINGS_CONFIDENCE[c.confidence]}) ECE {100 * f['ece']:.2f}%, AURC {f['aurc']:.5f} "
            f"(perfect ranking {f['oracle_aurc']:.5f}); {c.note}",
            highlight=False,
        )
    else:
        bound = " (at the search bound: the validation set is too easy to say more)" if f.get("at_bound") else ""
        report.console.print(
            f"temperature {c.temperature:.4f}{bound} fitted on {c.n:,} validation images: NLL "
            f"{f['nll_before']:.4f} -> {f['nll_after']:.4f}, ECE ({calibration.BINS} bins) "
            f"{100 * f['ece_before']:.2f}% -> {100 * f['ece_after']:.2f}%",
            highlight=False,
        )
    if c.thresholds:
        title = "reject thresholds chosen on the validation split (accept confidence >= P)"
        report.console.print(selective.threshold_table(_threshold_rows(c), title=title))
    report.console.print(escape(f"wrote {Path(args.run) / runs.CALIBRATION}"), highlight=False)
    return 0


def reject_threshold(args: argparse.Namespace, task: str, device: torch.device) -> tuple[float, str] | None:
    """The threshold ``--reject-below P`` or ``--target-error E`` asks for (``E``: stored in the run, else chosen
    on its validation split and stored) and the line that says where it came from; None without either flag."""
    if args.reject_below is not None:
        return float(args.reject_below), f"reject below P = {args.reject_below:g} (--reject-below)"
    if args.target_error is None:
        return None
    data = environment.data_at(args.data_root)
    c = _module(task).with_thresholds(args.run, [args.target_error], data=data, device=device)
    t = c.thresholds[float(args.target_error)]
    return t["threshold"], (
        f"reject below P = {t['threshold']:.4f}: chosen for target error {100 * args.target_error:g}% on "
        f"{c.n:,} validation readings (kept {100 * t['coverage']:.1f}% there at {100 * t['error']:.2f}% error); "
        f"stored in {Path(args.run) / runs.CALIBRATION}"
    )


def evaluation_folder(args: argparse.Namespace) -> Path:
    """Where ``hwr evaluate`` writes its figures: ``--out``, default the run folder's ``evaluate/``."""
    return Path(args.out) if getattr(args, "out", None) else Path(args.run) / "evaluate"


def _stored_rows(c: Calibration | None, conf: torch.Tensor, correct: torch.Tensor) -> list[selective.ThresholdRow]:
    rows = []
    for target, v in (c.thresholds if c is not None else {}).items():
        kept = calibration.accept(conf, v["threshold"])
        n = int(kept.sum())
        err = float((~correct[kept]).double().mean()) if n else 0.0
        rows.append((target, v["threshold"], v["coverage"], v["error"], n / len(conf), err))
    return rows


def evaluate_digits(
    args: argparse.Namespace,
    model: Any,
    params: Any,
    state: Any,
    meta: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    where: str,
) -> None:
    """The calibration report of a digit run on labelled images ``x``, ``y`` (``where`` names them)."""
    c = runs.read_calibration(args.run)
    t = c.temperature if c is not None else 1.0
    logits = digits_calibration.logits_of(model, params, state, x, mean=meta["mean"], std=meta["std"])
    pred, raw = digits_calibration.confidence(logits)
    _, conf = digits_calibration.confidence(logits, t)
    correct = pred == y
    ece = calibration.expected_calibration_error
    rows = [("softmax", 1.0, ece(raw, correct), calibration.nll(logits, y))]
    rows.append(("calibrated (calibration.json)", t, ece(conf, correct), calibration.nll(logits, y, t)))
    if c is None:
        report.console.print(
            escape(f"no {runs.CALIBRATION} in {args.run}: fit the temperature with hwr calibrate {args.run}"),
            highlight=False,
        )
        rows = rows[:1]
    report.console.print(selective.calibration_table(rows, title=escape(f"calibration on {where} ({len(y):,} images)")))
    curves = {"softmax": calibration.risk_coverage(raw, correct)}
    if c is not None:
        curves["calibrated"] = calibration.risk_coverage(conf, correct)
    _selective_report(args, where, curves, _stored_rows(c, conf, correct))
    panels = [("softmax", calibration.reliability(raw, correct), rows[0][2])]
    if c is not None:
        panels.append((f"temperature {t:.3f}", calibration.reliability(conf, correct), rows[1][2]))
    _draw(args, panels, f"{args.run} on {where}: reliability (max softmax)")


def _selective_report(
    args: argparse.Namespace,
    where: str,
    curves: dict[str, calibration.RiskCoverage],
    stored: list[selective.ThresholdRow],
) -> None:
    title = f"selective prediction on {where}: error among the most confident readings kept"
    report.console.print(selective.risk_coverage_table(curves, title=title))
    if stored:
        title = "stored reject thresholds (chosen on validation; accept confidence >= P)"
        report.console.print(selective.threshold_table(stored, title=title, where=where))


def _draw(args: argparse.Namespace, panels: list[tuple[str, calibration.Reliability, float]], title: str) -> None:
    path = evaluation_folder(args) / RELIABILITY_FIGURE
    report.save_figure(report.reliability_figure(panels, title=title), path)
    report.console.print(escape(f"wrote {path}"), highlight=False)


def evaluate_strings(
    args: argparse.Namespace, model: Any, params: Any, state: Any, meta: dict[str, Any], strings: Any, where: str
) -> None:
    """The selective-prediction report of a strings run on rendered ``strings`` (``where`` names them): the
    string confidence's ECE, risk-coverage table and AURC, and what the stored thresholds keep."""
    c = runs.read_calibration(args.run)
    conf, correct = strings_confidence.scored(model, params, state, strings, mean=meta["mean"], std=meta["std"])
    kind = STRINGS_CONFIDENCE[strings_confidence.CONFIDENCE]
    ece = calibration.expected_calibration_error(conf, correct)
    report.console.print(
        f"string confidence ({kind}): ECE ({calibration.BINS} bins) {100 * ece:.2f}% on {where}; "
        f"{strings_confidence.NOTE}",
        highlight=False,
    )
    stored = _stored_rows(c if c is not None and c.confidence == strings_confidence.CONFIDENCE else None, conf, correct)
    _selective_report(args, where, {kind: calibration.risk_coverage(conf, correct)}, stored)
    _draw(args, [(kind, calibration.reliability(conf, correct), ece)], f"{args.run} on {where}: reliability")
