"""Optuna studies over ``hwr.tasks.digits.run``: a study module declares a ``StudySpec`` (``hwr.tune.spec``); this
module turns it into an objective and runs this worker's share of the trials against a storage.

- Storage (``hwr.tune.storage``): SQLite by default (``sqlite:///runs/studies.db``); any Optuna RDB
  URL, e.g. PostgreSQL, lets many machines join one study by running the same command. Heartbeats mark a dead
  worker's trial FAIL and ``RetryHeartbeatStaleTrialCallback`` queues it again; rerunning the command resumes
  (``load_if_exists``). Each trial records its worker (host, pid): a trial whose worker on this host has exited
  (kill -9) is failed and queued again at once, without waiting out the grace period (``fail_dead_trials``).
- Budget: ``n_trials`` counts COMPLETE + PRUNED trials over all workers. A trial that starts when the budget is
  already taken by finished trials, or by earlier-numbered running trials whose workers are alive, ends as FAIL
  with reason ``budget`` (quietly: no traceback is logged), so the study ends with exactly ``n_trials`` finished
  trials however many workers race. While a running trial's worker may be dead (another host, heartbeat not yet
  stale), the new trial waits for it to finish or go stale rather than count it (``budget_state``).
- Each trial trains in its own run folder ``runs/studies/NAME/trial_NNNN`` (config, metrics, checkpoint kept
  for the best trial), written atomically. A compiled trial step is shared by the trials of one structure in a
  worker (its values are tensor inputs: ``hwr.tasks.digits.training.tuned``); only a new structure compiles.
- Execution: the spec's ``execution`` (default eager: a trial of a few hundred images trains in seconds, while
  each new configuration would pay its own compile) runs every trial, re-run and contender, its
  ``source_execution`` (default compiled) the pretrained source; ``hwr study run --device`` sets both devices,
  and workers inherit it. Neither is part of any run's identity.
- Validation: the spec declares the protocol all its runs use (``heldout``: a balanced split disjoint from train
  and test; ``kfold``: the metric averaged over stratified folds). ``hwr.tune.evaluation.evaluate_best`` re-runs the
  top trials on fresh seeds before naming a winner and reads the test split once, for the final table.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hwr import files, runs
from hwr.config import DataSettings, from_dict, to_dict
from hwr.data import folders
from hwr.engine import train
from hwr.engine.execution import Execution
from hwr.tasks import digits
from hwr.tasks.digits.config import RunConfig
from hwr.tune.spec import METRICS, StudyContext, StudyError, StudySpec, pruner_epochs
from hwr.tune.storage import experimental_ok, open_storage, open_study

__all__ = [
    "IMPORTANCE_EVALUATOR",
    "BudgetReached",
    "best_trial",
    "budget_state",
    "config_of",
    "fail_dead_trials",
    "importance_inputs",
    "objective",
    "optimize",
    "param_importances",
    "prepare_source",
    "prepare_zoo",
    "pretrain",
    "pretrain_job",
    "train_fresh",
    "trial_counts",
    "trial_rows",
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w")  # noqa: SIM115 - held for the duration of the lock
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def train_fresh(
    config: RunConfig,
    out: Path,
    execution: Execution,
    data: DataSettings,
    callbacks: Sequence[train.Callback] = (),
    *,
    test_split: bool = False,
    final_validation_only: bool = False,
    validate_at: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into a fresh folder ``out`` (whatever an aborted start left there is removed), no figures:
    every trial, re-run and contender goes through here. A compiled step is shared with the earlier runs of this
    process of the same structure (``hwr.engine.execution.tuned_step``, which also keeps dynamo within its budget
    of 8 versions of a function), so only a new structure compiles.
    Only the final evaluation's contenders pass ``test_split=True``: trials and re-runs never read the test split.
    ``final_validation_only`` (re-runs and contenders: nothing prunes them) validates after the last epoch only;
    ``validate_at(epoch)`` (a trial: the epochs its pruner reads, ``spec.pruner_epochs``) validates at those
    epochs and the last; by default every epoch."""
    if out.exists():
        shutil.rmtree(out)
    return digits.run(
        config,
        out,
        execution=execution,
        callbacks=callbacks,
        teacher_callbacks=[c for c in callbacks if isinstance(c, _Pruning)],
        data=data,
        write_figures=False,
        test_split=test_split,
        validate_every=config.epochs if final_validation_only else (validate_at or 1),
    )


def pretrain(
    config: RunConfig,
    root: Path = Path("runs"),
    *,
    execution: Execution | None = None,
    data: DataSettings | None = None,
    callbacks: Sequence[train.Callback] = (),
) -> Path:
    """Train (once, under a file lock, resuming an interrupted start) and cache the pretrained source run of
    ``config`` under ``root/pretrained``, keyed by the config's content; returns its folder. Every source a study
    uses (its zoo, the other pretraining seeds of its evaluation) comes from here."""
    digest = hashlib.sha1(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:10]
    out = root / "pretrained" / f"{config.recipe or 'source'}-{files.slug(config.dataset)}-{digest}"
    with _lock(out.parent / f"{out.name}.lock"):  # not with_suffix: "mnist_lowres_0.5-..." has a dot
        if not runs.finished(out):  # metrics.json alone: killed before its final checkpoint, which resume writes
            resume = (out / runs.CHECKPOINT).is_file()
            digits.run(config, out, execution=execution or Execution(), resume=resume, callbacks=callbacks, data=data)
    return out


def pretrain_job(config: RunConfig, root: Path, execution: Execution, data: DataSettings) -> Path:
    """``pretrain`` with positional arguments only: one job of ``hwr.tune.pool.parallel_map``."""
    return pretrain(config, root, execution=execution, data=data)


def prepare_source(
    spec: StudySpec, root: Path = Path("runs"), callbacks=(), *, data: DataSettings | None = None
) -> Path | None:
    """The study's default pretrained source run (``spec.source`` through ``pretrain``), or None without one."""
    if spec.source is None:
        return None
    return pretrain(spec.source, root, execution=spec.source_execution, data=data, callbacks=callbacks)


def prepare_zoo(
    spec: StudySpec, root: Path = Path("runs"), callbacks=(), *, data: DataSettings | None = None
) -> dict[str, Path]:
    """Every source of ``spec.zoo`` pretrained (once each, ``pretrain``, as ``spec.pretraining`` says), by name."""
    out = {}
    for name in spec.zoo:
        config, execution = spec.pretraining(name)
        out[name] = pretrain(config, root, execution=execution, data=data, callbacks=callbacks)
    return out


def budget_state(trials: Sequence[optuna.trial.FrozenTrial], number: int, n_trials: int) -> str:
    """Whether trial ``number`` may train: ``"taken"`` when finished trials already fill the budget, ``"run"``
    when finished plus earlier-numbered running trials leave room, ``"wait"`` otherwise (an earlier running trial
    holds the last places: it will finish, or its worker is dead and it goes stale and is retried)."""
    finished = sum(t.state in FINISHED for t in trials)
    if finished >= n_trials:
        return "taken"
    earlier_running = sum(t.state == TrialState.RUNNING and t.number < number for t in trials)
    return "run" if finished + earlier_running < n_trials else "wait"


class BudgetReached(Exception):
    """This trial started after the study's trial budget was taken by other workers."""


def _worker(number: int) -> dict[str, Any]:
    """Who runs trial ``number``: stored in its user attributes so another process can tell a dead worker."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "trial": number}


def _pid_gone(pid: int) -> bool:
    """Whether process ``pid`` on this host has exited (a zombie, killed but not yet reaped, has)."""
    if pid == os.getpid():
        return True  # this process runs one trial at a time: another RUNNING one with its pid is a dead namesake
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return False


def _worker_dead(trial: optuna.trial.FrozenTrial, host: str) -> bool:
    """Whether ``trial``'s worker is known dead: it ran on ``host`` (this one) and its process has exited. A worker
    elsewhere, or a trial that has not recorded its worker yet, is left to the heartbeat's grace period."""
    w = trial.user_attrs.get("worker")
    if not isinstance(w, dict) or w.get("host") != host or w.get("trial") != trial.number:
        return False  # a retry inherits its predecessor's attributes until it records its own
    return isinstance(w.get("pid"), int) and _pid_gone(w["pid"])


def fail_dead_trials(study: optuna.Study, store: optuna.storages.BaseStorage, exclude: int | None = None) -> list[int]:
    """Fail the RUNNING trials (but ``exclude``) whose worker on this host has exited, as the heartbeat does once
    the grace period has passed, and queue their retries with the storage's stale-trial callback; returns the
    numbers failed. Without it a rerun soon after a kill -9 counts the dead trial toward the budget."""
    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed = []
    for t in running:
        if t.number == exclude or not _worker_dead(t, host):
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another process failed it first
            if store.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t)
    callback = (
        store.get_heartbeat_stale_trial_callback() if hasattr(store, "get_heartbeat_stale_trial_callback") else None
    )
    for t in failed:
        if callback is not None:
            with experimental_ok():
                callback(study, copy.deepcopy(store.get_trial(t._trial_id)))
    return [t.number for t in failed]


def _await_budget(
    study: optuna.Study, store: optuna.storages.BaseStorage, number: int, n_trials: int, poll: float
) -> bool:
    """True when the budget is taken and trial ``number`` must not train; waits (``poll`` seconds at a time)
    while earlier running trials hold the last places and their workers may be dead."""
    while True:
        fail_dead_trials(study, store, exclude=number)
        with experimental_ok():
            optuna.storages.fail_stale_trials(study)  # heartbeats past the grace period
        state = budget_state(study.get_trials(deepcopy=False), number, n_trials)
        if state != "wait":
            return state == "taken"
        time.sleep(poll)


class _QuietBudget(logging.Filter):
    """Drops Optuna's two "trial failed" records (the first with the traceback, then "Trial N failed with value
    None.") for a trial that ended because the budget was taken: that is the study's normal end, reported by the
    caller in one line."""

    def __init__(self) -> None:
        super().__init__()
        self._ended: set[str] = set()  # "Trial N" of the trials whose first record was dropped

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], BudgetReached):
            self._ended.add(message.partition(" failed with")[0])
            return False
        trial, said, _ = message.partition(" failed with value ")
        if said and trial in self._ended:
            self._ended.discard(trial)
            return False
        return True


@contextlib.contextmanager
def _quiet_budget() -> Iterator[None]:
    logger, quiet = logging.getLogger("optuna.study._optimize"), _QuietBudget()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class _Pruning(train.Callback):
    """Reports a trial's validation figure per epoch as one learning curve and prunes it where the pruner says. A
    self-training trial trains two models, its teacher then itself (``digits.run(teacher_callbacks=)``): the
    teacher's epochs are steps ``0 .. E-1`` of the curve and the student's ``E .. 2E-1``, each the validation
    figure of the trial's model at that point of its training, as the objective is at the end; so a poor recipe
    is pruned during its teacher, at the same rungs as any trial, and a student at the rungs past ``E``."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric, self.offset, self.steps = trial, metric, 0, 0

    def on_build(self, compile: bool) -> None:
        self.offset = self.steps  # a second run of the trial (its student) continues the curve

    def on_epoch_end(self, epoch: int, state: train.TrainState, record: dict[str, Any]) -> None:
        step = self.offset + epoch
        self.steps = max(self.steps, step + 1)
        value = record.get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step + 1} with {self.metric}={value:.4f}")


def objective(
    spec: StudySpec,
    context: StudyContext,
    n_trials: int,
    store: optuna.storages.BaseStorage | None = None,
    poll: float = 10.0,
) -> Callable[[optuna.Trial], Any]:
    """The Optuna objective: config from ``spec.suggest``, train with per-epoch pruning reports, return the
    spec's metrics. A NaN loss prunes the trial with the reason recorded in its user attributes. Before training,
    the trial records its worker and checks the budget (``_await_budget`` on ``store``, default the study's)."""

    def run_trial(trial: optuna.Trial) -> float | tuple[float, ...]:
        trial.set_user_attr("worker", _worker(trial.number))
        if _await_budget(trial.study, store or trial.study._storage, trial.number, n_trials, poll):
            trial.study.stop()
            trial.set_user_attr("failure", "budget: the requested trials were already taken by other workers")
            raise BudgetReached()
        config = spec.suggest(trial, context)
        out = context.out_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(out))
        trial.set_user_attr("config", to_dict(config))
        folds = spec.fold_count()
        per_fold = []
        for fold in range(folds):  # pruning reports come from the first fold only
            pruning = [_Pruning(trial, spec.metrics[0])] if spec.pruner and fold == 0 else []
            run_dir = out if folds == 1 else out / f"fold{fold}"
            due = pruner_epochs(trial.study.pruner if pruning else None)  # the rest is never read
            try:
                result = train_fresh(
                    spec.protocol(config, fold), run_dir, spec.execution, context.data, pruning, validate_at=due
                )
            except train.NonFiniteLoss as e:
                trial.set_user_attr("failure", f"non-finite loss: {e}")
                raise optuna.TrialPruned(f"non-finite loss at epoch {e.epoch + 1}") from None
            per_fold.append(tuple(METRICS[m](result) for m in spec.metrics))
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
        (out / runs.CHECKPOINT).unlink(missing_ok=True)


def _keep_dataset(study: optuna.Study, name: str, dataset: str | None) -> str | None:
    """The study's data set, fixed at its first run (recorded in its user attributes): ``dataset`` where none is
    recorded or it is the same (an older, relative ``folder:`` record compared resolved), else a ``StudyError``."""
    saved = study.user_attrs.get("dataset")
    if saved is not None and dataset is not None and folders.absolute_name(saved) != dataset:
        raise StudyError(f"study {name!r} runs on dataset {saved!r}, not {dataset!r}; choose another --name")
    dataset = dataset or saved
    if dataset is not None:
        study.set_user_attr("dataset", dataset)
    return dataset


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
    data: DataSettings | None = None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Run this process's share of the study until ``n_trials`` trials have finished over all workers.
    ``on_trial`` is called after each of this process's trials (not those that found the budget taken).
    ``spec_ref`` (the module name or .py path the spec came from) is stored so ``show``/``best`` can reload it;
    ``dataset`` (stored too) replaces the spec's target data, e.g. another long-tail draw; ``data`` says where
    the data sets live and whether they may be downloaded (default ``DataSettings()``)."""
    name = name or spec.name
    n_trials = n_trials or spec.n_trials
    data = data or DataSettings()
    store = open_storage(storage_url, heartbeat=heartbeat, grace=grace, sqlite_timeout=sqlite_timeout)
    study = open_study(spec, store, name, seed, worker)
    study.set_user_attr("spec", spec_ref or spec.name)
    study.set_user_attr("n_trials", n_trials)
    dataset = _keep_dataset(study, name, dataset)
    if spec.initial and worker == 0 and not study.user_attrs.get("initial_enqueued"):
        study.set_user_attr("initial_enqueued", True)  # once per study, however often the command is rerun
        for params in spec.initial:
            study.enqueue_trial(params, skip_if_exists=True)
    source = prepare_source(spec, root, data=data)
    context = StudyContext(source, root / "studies" / name, dataset, data, prepare_zoo(spec, root, data=data))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fail_dead_trials(study, store)  # before the first trial, so a dead worker's trial is retried first
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [
        optuna.study.MaxTrialsCallback(n_trials, states=FINISHED)
    ]
    if on_trial is not None:
        callbacks.append(lambda s, t: None if _budget_fail(t) else on_trial(s, t))
    if remaining > 0:
        with experimental_ok(), _quiet_budget():  # the stale-trial retry runs inside
            study.optimize(
                objective(spec, context, n_trials, store, poll=heartbeat),
                timeout=timeout,
                catch=(BudgetReached,),
                callbacks=callbacks,
            )
    return study


def _budget_fail(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that ended because the budget was taken: bookkeeping, not a result or a failure."""
    return trial.state == TrialState.FAIL and trial.user_attrs.get("failure", "").startswith("budget")


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING); FAIL leaves out the trials that ended only
    because the budget was taken."""
    counts = dict.fromkeys(("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"), 0)
    for t in study.get_trials(deepcopy=False):
        if not _budget_fail(t):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


IMPORTANCE_EVALUATOR = "PED-ANOVA"


@contextlib.contextmanager
def importance_inputs(study: optuna.Study) -> Iterator[tuple[Any, Callable[[Any], float] | None]]:
    """The evaluator (Optuna's default, ``PedAnovaImportanceEvaluator``) and target that rank parameters by what
    puts a trial among the best of the first objective in its own direction. One objective: no target (the
    evaluator reads the direction). Several: the first, negated when maximised (the evaluator reads any target as
    lower-is-better); its warning about that is silenced inside the block only, as the sign is already right."""
    from optuna.importance import PedAnovaImportanceEvaluator

    target = None
    if len(study.directions) > 1:
        sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0

        def target(t: optuna.trial.FrozenTrial) -> float:
            return sign * t.values[0]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*computes the importances of params to achieve low")
        yield PedAnovaImportanceEvaluator(), target


def param_importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importances of the parameters for the first objective, in the study's direction (what reaches
    the best 10% of trials), most important first; raises ``ValueError``/``RuntimeError`` with too few trials."""
    with importance_inputs(study) as (evaluator, target):
        return optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best completed trial (single objective) or the Pareto trial best on the first metric."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise StudyError(
            f"study {study.study_name!r} has no completed trial yet; rerun the hwr study run command that created it"
        )
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
