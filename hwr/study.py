"""Optuna studies over ``hwr.experiment.run``: a study module declares a ``StudySpec`` (its data, its search
space as ``suggest(trial, context) -> RunConfig``, its metrics and directions, its sampler, pruner and trial
count); this module turns it into an objective, runs workers against a storage, and evaluates the winner.

- Storage: SQLite by default (``sqlite:///runs/studies.db``); any Optuna RDB URL, e.g. PostgreSQL, lets many
  machines join one study by running the same command. Heartbeats mark a dead worker's trial FAIL and
  ``RetryHeartbeatStaleTrialCallback`` queues it again; rerunning the command resumes (``load_if_exists``).
- Budget: ``n_trials`` counts COMPLETE + PRUNED trials over all workers. A trial that starts when the budget is
  already taken by finished and earlier-numbered running trials ends as FAIL with reason ``budget``, so the
  study ends with exactly ``n_trials`` finished trials however many workers race.
- Each trial trains in its own run folder ``runs/studies/NAME/trial_NNNN`` (config, metrics, checkpoint kept
  for the best trial), written atomically. Dynamo is reset per trial so a new architecture never hits the
  recompile limit.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hwr import experiment, files, train
from hwr.config import RunConfig, to_dict

# heartbeats and stale-trial retry are marked experimental in Optuna 5; they are what makes workers killable
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = [
    "StudyContext",
    "StudyError",
    "StudySpec",
    "evaluate_best",
    "load_spec",
    "open_study",
    "optimize",
    "prepare_source",
    "run_workers",
    "storage",
]

DEFAULT_STORAGE = "sqlite:///runs/studies.db"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyError(ValueError):
    """A study that cannot run as asked: bad spec, unreachable or locked storage, unknown study name."""


@dataclasses.dataclass(frozen=True)
class StudyContext:
    """What ``suggest`` may depend on besides the trial: the pretrained source run and the artefact root."""

    source_dir: Path | None
    out_dir: Path


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A study's declaration. ``metrics[i]`` is read from a run's result (``val_macro_f1``, ``val_accuracy``,
    ``num_params``, ``samples_per_s``) and optimised in ``directions[i]``; the first metric is reported per
    epoch for pruning (single-objective studies only)."""

    name: str
    description: str
    suggest: Callable[[optuna.Trial, StudyContext], RunConfig]
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    n_trials: int
    sampler: Callable[[int], optuna.samplers.BaseSampler]
    pruner: Callable[[], optuna.pruners.BasePruner] | None = None
    source: RunConfig | None = None
    baselines: Callable[[StudyContext], dict[str, RunConfig]] | None = None
    eval_seeds: tuple[int, ...] = (101, 102, 103)

    def __post_init__(self) -> None:
        if not self.metrics or len(self.metrics) != len(self.directions):
            raise StudyError(
                f"study {self.name!r}: metrics {self.metrics} and directions {self.directions} must pair up"
            )
        bad = [d for d in self.directions if d not in ("maximize", "minimize")]
        if bad:
            raise StudyError(f"study {self.name!r}: directions must be maximize or minimize, got {bad}")
        unknown = [m for m in self.metrics if m not in _METRICS]
        if unknown:
            raise StudyError(f"study {self.name!r}: unknown metric(s) {unknown}; choose from {sorted(_METRICS)}")
        if self.n_trials < 1 or not callable(self.suggest) or not callable(self.sampler):
            raise StudyError(f"study {self.name!r}: needs n_trials >= 1 and callable suggest and sampler")
        if self.pruner is not None and len(self.metrics) > 1:
            raise StudyError(f"study {self.name!r}: Optuna cannot prune multi-objective studies; set pruner=None")


_METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
    "val_macro_f1": lambda r: r["val"]["macro_f1"],
    "val_accuracy": lambda r: r["val"]["accuracy"],
    "val_balanced_accuracy": lambda r: r["val"]["balanced_accuracy"],
    "num_params": lambda r: float(r["num_params"]),
    "samples_per_s": lambda r: r["timing"]["samples_per_s"],
}


def load_spec(name: str) -> StudySpec:
    """The ``SPEC`` of study module ``studies/<name>.py`` (or of a path to a ``.py`` file), validated."""
    try:
        if name.endswith(".py"):
            path = Path(name)
            spec = importlib.util.spec_from_file_location(f"hwr_study_{path.stem}", path)
            if spec is None or not path.is_file():
                raise StudyError(f"study file {path} not found")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(f"studies.{name}")
    except ModuleNotFoundError as e:
        if e.name in (f"studies.{name}", "studies"):
            known = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "studies").glob("[a-z]*.py"))
            raise StudyError(f"unknown study {name!r}; choose one of {known} or pass a path to a .py file") from None
        raise
    except SyntaxError as e:
        raise StudyError(f"study module {name!r} does not parse: {e}") from None
    spec_obj = getattr(module, "SPEC", None)
    if not isinstance(spec_obj, StudySpec):
        raise StudyError(
            f"study module {name!r} must define SPEC = hwr.study.StudySpec(...); found {type(spec_obj).__name__}"
        )
    return spec_obj


def storage(url: str | None = None, *, heartbeat: int = 10, grace: int = 30) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats and retry of stale trials; raises ``StudyError`` naming the URL when the
    database cannot be reached, is locked, or needs a driver that is not installed."""
    url = url or DEFAULT_STORAGE
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"connect_args": {"timeout": float(os.environ.get("HWR_SQLITE_TIMEOUT", "60"))}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=heartbeat,
            grace_period=grace,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    except ImportError as e:
        raise StudyError(f"storage {url!r} needs a database driver: {e}; pip install psycopg2-binary") from None
    except Exception as e:  # sqlalchemy.exc.OperationalError and friends
        reason = str(e).splitlines()[0]
        if "locked" in reason:
            raise StudyError(
                f"SQLite storage {url} is locked by another process ({reason}); wait or use PostgreSQL"
            ) from None
        raise StudyError(
            f"cannot open study storage {url}: {reason}; check that the server is up and the URL is right"
        ) from None


def open_study(
    spec: StudySpec, store: optuna.storages.BaseStorage, name: str, seed: int, worker: int = 0
) -> optuna.Study:
    """Create or load the study; the sampler is seeded per worker so workers do not propose the same points."""
    pruner = spec.pruner() if spec.pruner else optuna.pruners.NopPruner()
    try:
        return optuna.create_study(
            study_name=name,
            storage=store,
            sampler=spec.sampler(seed + 1000 * worker),
            pruner=pruner,
            directions=list(spec.directions),
            load_if_exists=True,
        )
    except ValueError as e:
        raise StudyError(f"study {name!r} exists with other directions ({e}); choose another --name") from None


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w")  # noqa: SIM115 - held for the duration of the lock
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def prepare_source(spec: StudySpec, root: Path = Path("runs"), callbacks=()) -> Path | None:
    """Train (once, under a file lock) and cache the study's pretrained source run; returns its folder."""
    if spec.source is None:
        return None
    digest = hashlib.sha1(json.dumps(to_dict(spec.source), sort_keys=True).encode()).hexdigest()[:10]
    out = root / "pretrained" / f"{spec.source.recipe or 'source'}-{spec.source.dataset}-{digest}"
    with _lock(out.with_suffix(".lock")):
        meta_ok = (out / experiment.METRICS).is_file()
        if not meta_ok:
            resume = (out / experiment.CHECKPOINT).is_file()
            experiment.run(spec.source, out, resume=resume, callbacks=callbacks)
    return out


def _budget_taken(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    finished = sum(t.state in FINISHED for t in trials)
    earlier_running = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
    return finished + earlier_running >= n_trials


class BudgetReached(Exception):
    """This trial started after the study's trial budget was taken by other workers."""


class _Pruning(train.Callback):
    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, epoch: int, state: train.TrainState, record: dict[str, Any]) -> None:
        value = record.get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} with {self.metric}={value:.4f}")


def objective(spec: StudySpec, context: StudyContext, n_trials: int) -> Callable[[optuna.Trial], Any]:
    """The Optuna objective: config from ``spec.suggest``, train with per-epoch pruning reports, return the
    spec's metrics. A NaN loss prunes the trial with the reason recorded in its user attributes."""

    def run_trial(trial: optuna.Trial) -> float | tuple[float, ...]:
        if _budget_taken(trial.study, trial, n_trials):
            trial.study.stop()
            trial.set_user_attr("failure", "budget: the requested trials were already taken by other workers")
            raise BudgetReached()
        torch._dynamo.reset()  # a fresh recompile budget per trial (dynamo keeps at most 8 versions)
        config = spec.suggest(trial, context)
        out = context.out_dir / f"trial_{trial.number:04d}"
        if out.exists():  # a retried trial number never repeats, but a folder from an aborted start may
            shutil.rmtree(out)
        trial.set_user_attr("run_dir", str(out))
        trial.set_user_attr("config", to_dict(config))
        pruning = [_Pruning(trial, spec.metrics[0])] if spec.pruner else []
        try:
            result = experiment.run(config, out, callbacks=pruning, write_figures=False)
        except train.NonFiniteLoss as e:
            trial.set_user_attr("failure", f"non-finite loss: {e}")
            raise optuna.TrialPruned(f"non-finite loss at epoch {e.epoch + 1}") from None
        values = tuple(_METRICS[m](result) for m in spec.metrics)
        trial.set_user_attr("test_untouched", True)
        trial.set_user_attr("train_seconds", result["timing"]["train_seconds"])
        _keep_best_checkpoint(trial.study, trial.number, values, out)
        return values[0] if len(values) == 1 else values

    return run_trial


def _keep_best_checkpoint(study: optuna.Study, number: int, values: tuple[float, ...], out: Path) -> None:
    """Delete this trial's checkpoint unless it is the best so far (single objective) or not dominated."""
    if len(values) > 1:
        return  # Pareto studies keep all: any trial may end on the front
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number != number]
    if not done:
        return
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    best = max(sign * t.value for t in done)
    if sign * values[0] < best:
        (out / experiment.CHECKPOINT).unlink(missing_ok=True)


def optimize(
    spec: StudySpec,
    *,
    storage_url: str | None = None,
    name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    seed: int = 0,
    worker: int = 0,
    root: Path = Path("runs"),
    heartbeat: int = 10,
    grace: int = 30,
    spec_ref: str | None = None,
) -> optuna.Study:
    """Run this process's share of the study until ``n_trials`` trials have finished over all workers.
    ``spec_ref`` (the module name or .py path the spec came from) is stored so ``show``/``best`` can reload it."""
    name = name or spec.name
    n_trials = n_trials or spec.n_trials
    store = storage(storage_url, heartbeat=heartbeat, grace=grace)
    study = open_study(spec, store, name, seed, worker)
    study.set_user_attr("spec", spec_ref or spec.name)
    study.set_user_attr("n_trials", n_trials)
    source = prepare_source(spec, root)
    context = StudyContext(source, root / "studies" / name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if remaining > 0:
        study.optimize(
            objective(spec, context, n_trials),
            timeout=timeout,
            catch=(BudgetReached,),
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=FINISHED)],
        )
    return study


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


def evaluate_best(
    spec: StudySpec,
    study: optuna.Study,
    *,
    root: Path = Path("runs"),
    callbacks=(),
    on_run: Callable[[str, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Retrain the best configuration with fresh seeds and evaluate on the held-out test split, beside the
    spec's baselines, each over ``spec.eval_seeds``. Returns (and writes ``evaluation.json``) mean and spread of
    test macro-F1 and balanced accuracy per contender, plus per-class F1 means."""
    best = best_trial(study)
    config = _config_of(best)
    out_root = root / "studies" / study.study_name / "evaluation"
    context = StudyContext(prepare_source(spec, root), root / "studies" / study.study_name)
    contenders = {"best": config, **(spec.baselines(context) if spec.baselines else {})}
    results: dict[str, Any] = {"study": study.study_name, "best_trial": best.number, "contenders": {}}
    for label, cfg in contenders.items():
        runs = []
        for s in spec.eval_seeds:
            out = out_root / f"{label}_seed{s}"
            if (out / experiment.METRICS).is_file():
                r = json.loads((out / experiment.METRICS).read_text())
            else:
                if out.exists():
                    shutil.rmtree(out)
                torch._dynamo.reset()
                r = experiment.run(dataclasses.replace(cfg, seed=s), out, callbacks=callbacks, write_figures=False)
            runs.append(r)
            if on_run:
                on_run(label, s, r)
        results["contenders"][label] = _aggregate(runs, cfg)
    base = results["contenders"].get("plain_finetune")
    if base:
        results["gain_macro_f1_vs_plain_finetune"] = (
            results["contenders"]["best"]["macro_f1_mean"] - base["macro_f1_mean"]
        )
    files.write_json(root / "studies" / study.study_name / "evaluation.json", results)
    return results


def _aggregate(runs: list[dict[str, Any]], cfg: RunConfig) -> dict[str, Any]:
    f1 = [r["test"]["macro_f1"] for r in runs]
    bal = [r["test"]["balanced_accuracy"] for r in runs]
    per_class = [r["test"]["per_class"]["f1"] for r in runs]
    return {
        "macro_f1_mean": statistics.fmean(f1),
        "macro_f1_std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
        "balanced_accuracy_mean": statistics.fmean(bal),
        "balanced_accuracy_std": statistics.stdev(bal) if len(bal) > 1 else 0.0,
        "per_class_f1_mean": [statistics.fmean(c) for c in zip(*per_class)],
        "seeds": [r["config"]["seed"] for r in runs],
        "config": to_dict(cfg),
    }


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best completed trial (single objective) or the Pareto trial best on the first metric."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet; run: hwr study run ...")
    if len(study.directions) == 1:
        return study.best_trial
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    return max(study.best_trials, key=lambda t: sign * t.values[0])


def _config_of(trial: optuna.trial.FrozenTrial) -> RunConfig:
    from hwr.config import from_dict

    if "config" not in trial.user_attrs:
        raise StudyError(f"trial {trial.number} has no stored config; it was not made by hwr study run")
    return from_dict(RunConfig, trial.user_attrs["config"])


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One JSON-ready row per trial: number, state, values, params, duration, failure reason."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        dur = t.duration.total_seconds() if t.duration else math.nan
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "values": t.values,
                "params": t.params,
                "seconds": dur,
                "failure": t.user_attrs.get("failure", ""),
            }
        )
    return rows
