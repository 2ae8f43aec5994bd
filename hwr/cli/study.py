"""``hwr study run | show | plot | best``: Optuna studies over the library's training run."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
from rich.markup import escape

from hwr import files, report, tune
from hwr.cli import UsageError, environment
from hwr.cli.train import check_dataset
from hwr.engine import runtime
from hwr.report import study_log


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="Optuna studies: run, show, plot, best")
    ss = p.add_subparsers(dest="study_command", required=True)

    r = ss.add_parser("run", help="run (or resume) a study; many workers and machines may join")
    r.add_argument("study", help="study module under studies/ (e.g. optdigits_longtail) or a .py path")
    _storage_args(r)
    r.add_argument("--n-trials", type=int, default=None, help="finished trials to reach over all workers")
    r.add_argument("--timeout", type=float, default=None, help="seconds after which this process stops")
    r.add_argument("--workers", type=_positive, default=1, help="worker processes on this machine")
    r.add_argument("--seed", type=int, default=0, help="sampler seed (each worker adds 1000 * its index)")
    r.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    r.add_argument("--heartbeat", type=int, default=10, help="seconds between worker heartbeats")
    r.add_argument("--grace", type=int, default=30, help="seconds without heartbeat before a trial is failed")
    r.add_argument(
        "--dataset",
        default=None,
        help="target data instead of the study's default, e.g. optdigits-lt:ratio=50,order=1 (another "
        "long-tail draw; the study name defaults to NAME-DATASET)",
    )
    r.add_argument("--skip-bad", action="store_true", help="folder:/csv: data: skip unreadable or blank images")
    r.add_argument(
        "--pruner",
        default=None,
        choices=sorted(tune.PRUNERS),
        help="pruner instead of the study's own (halving: successive halving; see the README's studies section)",
    )
    _device_arg(r)
    r.set_defaults(func=cmd_run)

    s = ss.add_parser("show", help="table of trials, the best trial and parameter importances")
    s.add_argument("name", help="study name (its module under studies/)")
    _storage_args(s, name=False)
    s.set_defaults(func=cmd_show)

    pl = ss.add_parser("plot", help="PNG figures of a study")
    pl.add_argument("name", help="study name (its module under studies/)")
    pl.add_argument("--out", required=True, help="folder to write the PNG figures into")
    _storage_args(pl, name=False)
    pl.set_defaults(func=cmd_plot)

    b = ss.add_parser("best", help="the best trial; --evaluate retrains it and the baselines on the test split")
    b.add_argument("name", help="study name (its module under studies/)")
    b.add_argument(
        "--evaluate", action="store_true", help="retrain the best, its start and the baselines; score them on test"
    )
    b.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="--evaluate: runs trained at once, in processes that split the cores (the figures do not change)",
    )
    b.add_argument("--skip-bad", action="store_true", help="folder:/csv: data: skip unreadable or blank images")
    _storage_args(b, name=False)
    _device_arg(b)
    b.set_defaults(func=cmd_best)


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse turns the error into one line and exit code 2)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return n


def _storage_args(p: argparse.ArgumentParser, *, name: bool = True) -> None:
    p.add_argument("--storage", default=None, help=f"Optuna storage URL (default {tune.DEFAULT_STORAGE})")
    p.add_argument("--root", default="runs", help="artefact root (runs/studies/NAME, runs/pretrained)")
    if name:
        p.add_argument("--name", default=None, help="study name in the storage (default: the module's name)")


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default=None,
        help="where every run trains: auto (CUDA when available, else CPU), cpu, cuda, cuda:N; workers "
        "inherit it (default: the study's own execution, auto)",
    )


def _on_device(spec: tune.StudySpec, device: str | None) -> tune.StudySpec:
    if device is not None:
        try:
            runtime.resolve_device(device)
        except ValueError as e:
            raise UsageError(str(e)) from None
    return spec.on_device(device)


def _storage(url: str | None, *, create: bool = True):
    """The study storage at ``url``, waiting ``$HWR_SQLITE_TIMEOUT`` seconds on a locked SQLite database;
    ``create=False`` (show, plot, best) refuses a SQLite database that is not there instead of creating it."""
    return tune.open_storage(url, sqlite_timeout=environment.read().sqlite_timeout, create=create)


def _shown_storage(args: argparse.Namespace) -> str:
    """The storage URL a message names: the one given (password masked) or the default."""
    return tune.storage.mask_url(args.storage or tune.DEFAULT_STORAGE)


def _hint(args: argparse.Namespace, *words: str) -> str:
    """``hwr study WORDS`` as a command that can be pasted: with ``--storage`` (password masked) and ``--root``
    when they were given."""
    parts = ["hwr", "study", *words]
    parts += ["--storage", tune.storage.mask_url(args.storage)] if args.storage else []
    parts += ["--root", args.root] if args.root != "runs" else []
    return " ".join(shlex.quote(p) for p in parts)


def _rerun(argv: list[str]) -> str:
    """The ``hwr study run`` command line given (a worker's ``--worker I`` left out), passwords masked."""
    keep, skip = [], False
    for a in argv:
        if skip or a == "--worker":
            skip = not skip
            continue
        keep.append(tune.storage.mask_url(a))
    return " ".join(shlex.quote(p) for p in ["hwr", *keep])


def _data(skip_bad: bool = False) -> dict[str, Any]:
    """``data``: ``$HWR_DATA`` / ``$HWR_OFFLINE`` as one ``DataSettings`` (the CLI reads the environment, the
    library reads none; workers inherit the environment, so they read the same), and ``--skip-bad``."""
    return {"data": environment.data_at(environment.read().data.root, skip_bad=skip_bad)}


def _load(args: argparse.Namespace) -> tuple[optuna.Study, tune.StudySpec]:
    """The study ``args.name`` read from an existing storage (nothing is created) and its spec; a name not there
    is refused with the names that are."""
    store = _storage(args.storage, create=False)
    try:
        s = optuna.load_study(study_name=args.name, storage=store)
    except KeyError:
        names = ", ".join(x.study_name for x in optuna.get_all_study_summaries(store)) or "none"
        raise tune.StudyError(
            f"no study {args.name!r} in {_shown_storage(args)}; studies there: {names} (check the name and --storage)"
        ) from None
    return s, tune.load_spec(s.user_attrs.get("spec", args.name))


def run_workers(argv: list[str], workers: int, *, env: dict[str, str] | None = None) -> list[int]:
    """Start ``workers`` processes of ``hwr study run`` (``argv`` without --workers) sharing the cores, wait for
    them, and return their exit codes. Each gets ``--worker I`` (its sampler seed) and its share of threads."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = []
    for i in range(workers):
        child_env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads), "HWR_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "hwr.cli", "study", "run", *argv, "--worker", str(i)]
        procs.append(subprocess.Popen(cmd, env=child_env))
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise


def _pretrain_all(spec, root: Path, workers: int = 1) -> None:
    """The study's default source and its zoo, pretrained once each (cached): with progress bars in this process,
    or ``workers`` at a time in worker processes (one line as each finishes)."""
    todo = spec.pretrainings()
    if workers <= 1:
        for cfg, execution in todo:
            tune.pretrain(cfg, root, execution=execution, callbacks=[report.Progress(cfg.epochs)], **_data())
        return
    data = _data()["data"]

    def done(i: int, path: Path) -> None:
        report.console.print(escape(f"pretrained {todo[i][0].recipe or 'source'} -> {path}"))

    tune.parallel_map(tune.pretrain_job, [(cfg, root, ex, data) for cfg, ex in todo], workers, done)


def _worker_argv(args: argparse.Namespace, name: str) -> list[str]:
    """The ``hwr study run`` arguments each worker process of ``--workers K`` gets (``--worker I`` added by
    ``run_workers``): the study, its name and every option given."""
    argv = [args.study, "--name", name, "--seed", str(args.seed), "--root", args.root]
    argv += ["--heartbeat", str(args.heartbeat), "--grace", str(args.grace)]
    argv += ["--storage", args.storage] if args.storage else []
    argv += ["--n-trials", str(args.n_trials)] if args.n_trials else []
    argv += ["--timeout", str(args.timeout)] if args.timeout else []
    argv += ["--dataset", args.dataset] if args.dataset else []
    argv += ["--device", args.device] if args.device else []
    argv += ["--pruner", args.pruner] if args.pruner else []
    return argv + (["--skip-bad"] if args.skip_bad else [])


def cmd_run(args: argparse.Namespace) -> int:
    spec = _on_device(tune.load_spec(args.study), args.device).with_pruner(args.pruner)
    root = Path(args.root)
    dataset = check_dataset(args.dataset)  # a user's folder or CSV as an absolute path: the study stores it
    name = args.name or (spec.name if args.dataset is None else f"{spec.name}-{files.slug(args.dataset)}")
    if args.worker is None and args.workers > 1:
        _storage(args.storage)  # fail fast, once, on a bad URL
        _pretrain_all(spec, root, args.workers)
        codes = run_workers(_worker_argv(args, name), args.workers)
        if any(codes):
            report.console.print(
                f"[yellow]worker exit codes {codes}[/]; resume with  {_rerun(sys.argv[1:])}", highlight=False
            )
    else:
        if args.worker is None:
            _pretrain_all(spec, root)

        def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            report.console.print(study_log.trial_line(study, trial), markup=False, highlight=False)

        tune.optimize(
            spec,
            storage_url=args.storage,
            name=name,
            **_data(args.skip_bad),
            n_trials=args.n_trials,
            timeout=args.timeout,
            seed=args.seed,
            worker=args.worker or 0,
            root=root,
            heartbeat=args.heartbeat,
            grace=args.grace,
            spec_ref=str(Path(args.study).resolve()) if args.study.endswith(".py") else args.study,
            dataset=dataset,
            sqlite_timeout=environment.read().sqlite_timeout,
            on_trial=on_trial,
        )
        if args.worker is not None:
            return 0
    s = optuna.load_study(study_name=name, storage=_storage(args.storage))
    report.console.print(report.study_table(s))
    n_trials = int(s.user_attrs.get("n_trials", args.n_trials or spec.n_trials))
    line = study_log.budget_line(name, n_trials, tune.study.trial_counts(s), _rerun(sys.argv[1:]))
    report.console.print(line, markup=False, highlight=False)
    return 0


def _verdict(args: argparse.Namespace, s: optuna.Study) -> None:
    ev = tune.load_evaluation(Path(args.root), s.study_name)
    if ev is None:
        report.console.print(
            f"no test evaluation yet: {_hint(args, 'best', s.study_name, '--evaluate')}", markup=False, highlight=False
        )
        return
    for line in tune.verdict(ev):  # plain text: a class named "[b]" is a name, not markup
        report.console.print(line, style="red" if line.startswith("WARNING") else None, markup=False, highlight=False)


def cmd_show(args: argparse.Namespace) -> int:
    s, _ = _load(args)
    report.console.print(report.study_table(s))
    report.console.print(report.best_summary(s))
    report.console.print(report.importance_table(s))
    _verdict(args, s)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    s, spec = _load(args)
    evaluation = Path(args.root) / "studies" / s.study_name / "evaluation.json"
    ev = json.loads(evaluation.read_text()) if evaluation.is_file() else None
    for path in report.save_study_plots(s, Path(args.out), ev, metric=spec.metrics[0]):
        report.console.print(escape(f"wrote {path}"))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    s, spec = _load(args)
    spec = _on_device(spec, args.device)
    report.console.print(report.best_summary(s))
    if args.evaluate:

        def on_run(label: str, seed: int, r: dict) -> None:
            if "failed" in r:  # its loss diverged: left out, and the evaluation goes on
                report.console.print(f"  {label:<15} {r['failed']} (left out)")
                return
            if label.startswith("rerun"):  # selection reads validation only
                report.console.print(f"  {label:<15} seed {seed}: val macro-F1 {r['val']['macro_f1']:.4f}")
                return
            t = r["test"]
            report.console.print(
                f"  {label:<15} seed {seed}: test macro-F1 {t['macro_f1']:.4f}  "
                f"balanced acc {t['balanced_accuracy']:.4f}"
            )

        result = tune.evaluate_best(
            spec, s, root=Path(args.root), on_run=on_run, workers=args.workers, **_data(args.skip_bad)
        )
        report.console.print(report.evaluation_table(result))
        rows, start = result["selection"], result.get("start_trial")
        if any(r.get("reruns") for r in rows):
            also = f" and the start (#{start})" if any(r["trial"] == start for r in rows) else ""
            report.console.print(
                f"selected trial #{result['best_trial']} after re-running the top trials{also}; validation means "
                "(first figure and re-runs): "
                + ", ".join(f"#{r['trial']} " + (f"{r['mean']:.4f}" if "mean" in r else "diverged") for r in rows)
            )
    _verdict(args, s)
    return 0
