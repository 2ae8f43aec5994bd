"""Optuna studies over ``hwr.tasks.digits.training.run``: a study module declares a ``StudySpec`` (its data, its search
space as ``suggest(trial, context) -> RunConfig``, its metrics and directions, its sampler, pruner and trial
count); this module turns it into an objective, runs workers against a storage, and evaluates the winner.

- Storage (``hwr.tune.storage``, re-exported here): SQLite by default (``sqlite:///runs/studies.db``); any Optuna RDB
  URL, e.g. PostgreSQL, lets many machines join one study by running the same command. Heartbeats mark a dead
  worker's trial FAIL and ``RetryHeartbeatStaleTrialCallback`` queues it again; rerunning the command resumes
  (``load_if_exists``).
- Budget: ``n_trials`` counts COMPLETE + PRUNED trials over all workers. A trial that starts when the budget is
  already taken by finished and earlier-numbered running trials ends as FAIL with reason ``budget``, so the
  study ends with exactly ``n_trials`` finished trials however many workers race.
- Each trial trains in its own run folder ``runs/studies/NAME/trial_NNNN`` (config, metrics, checkpoint kept
  for the best trial), written atomically. Dynamo is reset per trial so a new architecture never hits the
  recompile limit.
- Execution: the spec's ``execution`` (default eager: a trial of a few hundred images trains in seconds, while
  each new configuration would pay its own compile) runs every trial, re-run and contender, its
  ``source_execution`` (default compiled) the pretrained source; ``hwr study run --device`` sets both devices,
  and workers inherit it. Neither is part of any run's identity.
- Validation: the spec declares the protocol all its runs use (``heldout``: a balanced split disjoint from train
  and test; ``kfold``: the metric averaged over stratified folds). ``hwr.tune.evaluation.evaluate_best`` re-runs the
  top trials on fresh seeds before naming a winner and reads the test split once, for the final table.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib
import importlib.util
import json
import math
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hwr.config import VALIDATIONS, RunConfig, from_dict, to_dict
from hwr.engine import train
from hwr.engine.execution import Execution
from hwr.tasks.digits import training as experiment
from hwr.tune.storage import DEFAULT_STORAGE, StudyError, experimental_ok, open_study, storage, with_installed_driver

__all__ = [
    "DEFAULT_STORAGE",
    "StudyContext",
    "StudyError",
    "StudySpec",
    "best_trial",
    "config_of",
    "load_spec",
    "open_study",
    "optimize",
    "prepare_source",
    "storage",
    "with_installed_driver",
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclasses.dataclass(frozen=True)
class StudyContext:
    """What ``suggest`` may depend on besides the trial: the pretrained source run and the artefact root."""

    source_dir: Path | None
    out_dir: Path
    dataset: str | None = None  # the target data set chosen at the command line (None: the spec's default)
    data_root: Path | None = None  # where data sets live (the CLI passes $HWR_DATA; None: ~/.cache/hwr)
    network: bool = True  # whether data may be downloaded from the internet (the CLI passes not $HWR_OFFLINE)


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
    # the validation protocol every trial, re-run and contender uses: "config" (as suggest sets it), "split",
    # "heldout" (the data set's own balanced split, ImageNet-LT style) or "kfold" (stratified, ``folds`` runs
    # per trial, the metric averaged over folds)
    validation: str = "config"
    folds: int = 5
    reference: str | None = None  # the baseline contender the best's gain is measured against
    oracle: Callable[[RunConfig, StudyContext], RunConfig] | None = None  # the best on balanced data: a ceiling
    rerun_top: int = 1  # re-run this many top trials on ``rerun_seeds`` and rank them by their mean
    rerun_seeds: tuple[int, ...] = (201, 202)
    # points enqueued before the sampler's own (``Study.enqueue_trial`` params), e.g. the untuned recipe, so the
    # search starts from what a user would try first; missing params are sampled as usual
    initial: tuple[dict[str, Any], ...] = ()
    # how trials, re-runs and contenders execute (eager), and how the pretrained source trains (a recipe: compiled)
    execution: Execution = dataclasses.field(default_factory=lambda: Execution(compile=False))
    source_execution: Execution = dataclasses.field(default_factory=Execution)

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
        if self.validation not in ("config", *VALIDATIONS):
            raise StudyError(
                f"study {self.name!r}: validation must be config, split, heldout or kfold, got {self.validation!r}"
            )
        if self.validation == "kfold" and self.folds < 2:
            raise StudyError(f"study {self.name!r}: kfold validation needs folds >= 2, got {self.folds}")
        if self.rerun_top < 1 or (self.rerun_top > 1 and not self.rerun_seeds):
            raise StudyError(f"study {self.name!r}: rerun_top must be >= 1, with rerun_seeds when > 1")
        if self.oracle is not None and self.source is None:
            raise StudyError(f"study {self.name!r}: an oracle needs a source model to fine-tune")

    def protocol(self, config: RunConfig, fold: int = 0) -> RunConfig:
        """``config`` under the spec's validation protocol (fold ``fold`` of ``folds`` for kfold)."""
        if self.validation == "config":
            return config
        if self.validation == "kfold":
            return dataclasses.replace(config, validation="kfold", folds=self.folds, fold=fold)
        return dataclasses.replace(config, validation=self.validation)

    def fold_count(self) -> int:
        return self.folds if self.validation == "kfold" else 1

    def on_device(self, device: str | None) -> StudySpec:
        """This spec with every run on ``device`` (None: unchanged)."""
        if device is None:
            return self
        return dataclasses.replace(
            self,
            execution=dataclasses.replace(self.execution, device=device),
            source_execution=dataclasses.replace(self.source_execution, device=device),
        )


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
            f"study module {name!r} must define SPEC = hwr.tune.study.StudySpec(...); found {type(spec_obj).__name__}"
        )
    return spec_obj


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w")  # noqa: SIM115 - held for the duration of the lock
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def prepare_source(
    spec: StudySpec,
    root: Path = Path("runs"),
    callbacks=(),
    *,
    data_root: Path | None = None,
    network: bool = True,
) -> Path | None:
    """Train (once, under a file lock) and cache the study's pretrained source run; returns its folder."""
    if spec.source is None:
        return None
    digest = hashlib.sha1(json.dumps(to_dict(spec.source), sort_keys=True).encode()).hexdigest()[:10]
    out = root / "pretrained" / f"{spec.source.recipe or 'source'}-{spec.source.dataset}-{digest}"
    with _lock(out.with_suffix(".lock")):
        meta_ok = (out / experiment.METRICS).is_file()
        if not meta_ok:
            resume = (out / experiment.CHECKPOINT).is_file()
            experiment.run(
                spec.source,
                out,
                execution=spec.source_execution,
                resume=resume,
                callbacks=callbacks,
                data_root=data_root,
                network=network,
            )
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
        folds = spec.fold_count()
        per_fold = []
        for fold in range(folds):  # pruning reports come from the first fold only
            pruning = [_Pruning(trial, spec.metrics[0])] if spec.pruner and fold == 0 else []
            run_dir = out if folds == 1 else out / f"fold{fold}"
            try:
                result = experiment.run(
                    spec.protocol(config, fold),
                    run_dir,
                    execution=spec.execution,
                    data_root=context.data_root,
                    network=context.network,
                    callbacks=pruning,
                    write_figures=False,
                )
            except train.NonFiniteLoss as e:
                trial.set_user_attr("failure", f"non-finite loss: {e}")
                raise optuna.TrialPruned(f"non-finite loss at epoch {e.epoch + 1}") from None
            per_fold.append(tuple(_METRICS[m](result) for m in spec.metrics))
        values = tuple(statistics.fmean(v) for v in zip(*per_fold))
        if folds > 1:
            trial.set_user_attr("fold_values", [list(v) for v in per_fold])
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
    dataset: str | None = None,
    sqlite_timeout: float = 60.0,
    data_root: Path | None = None,
    network: bool = True,
) -> optuna.Study:
    """Run this process's share of the study until ``n_trials`` trials have finished over all workers.
    ``spec_ref`` (the module name or .py path the spec came from) is stored so ``show``/``best`` can reload it;
    ``dataset`` (stored too) replaces the spec's target data, e.g. another long-tail draw; ``data_root`` is
    where the data sets live (None: ~/.cache/hwr), ``network=False`` forbids internet downloads."""
    name = name or spec.name
    n_trials = n_trials or spec.n_trials
    store = storage(storage_url, heartbeat=heartbeat, grace=grace, sqlite_timeout=sqlite_timeout)
    study = open_study(spec, store, name, seed, worker)
    study.set_user_attr("spec", spec_ref or spec.name)
    study.set_user_attr("n_trials", n_trials)
    saved = study.user_attrs.get("dataset")
    if saved is not None and dataset is not None and saved != dataset:
        raise StudyError(f"study {name!r} runs on dataset {saved!r}, not {dataset!r}; choose another --name")
    dataset = dataset or saved
    if dataset is not None:
        study.set_user_attr("dataset", dataset)
    if spec.initial and worker == 0 and not study.user_attrs.get("initial_enqueued"):
        study.set_user_attr("initial_enqueued", True)  # once per study, however often the command is rerun
        for params in spec.initial:
            study.enqueue_trial(params, skip_if_exists=True)
    source = prepare_source(spec, root, data_root=data_root, network=network)
    context = StudyContext(source, root / "studies" / name, dataset, data_root, network)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if remaining > 0:
        with experimental_ok():  # the stale-trial retry runs inside
            study.optimize(
                objective(spec, context, n_trials),
                timeout=timeout,
                catch=(BudgetReached,),
                callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=FINISHED)],
            )
    return study


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best completed trial (single objective) or the Pareto trial best on the first metric."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet; run: hwr study run ...")
    if len(study.directions) == 1:
        return study.best_trial
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    return max(study.best_trials, key=lambda t: sign * t.values[0])


def config_of(trial: optuna.trial.FrozenTrial) -> RunConfig:
    """The ``RunConfig`` a trial trained (stored in its user attributes by the objective)."""
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
