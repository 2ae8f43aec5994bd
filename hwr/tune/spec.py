"""A study's declaration: ``StudySpec`` (its data, its search space as ``suggest(trial, context) -> RunConfig``, its
metrics and directions, its sampler, pruner, trial count, validation protocol, baselines and how its runs
execute), what ``suggest`` may read besides the trial (``StudyContext``), ``load_spec`` (a study module under
``studies/`` or a ``.py`` path), and ``StudyError``, what every study failure raises.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from hwr.config import DataSettings
from hwr.engine.execution import Execution
from hwr.errors import HwrError
from hwr.tasks.digits.config import VALIDATIONS, RunConfig

__all__ = ["METRICS", "PRUNERS", "StudyContext", "StudyError", "StudySpec", "load_spec", "pruner_epochs"]


class StudyError(HwrError, ValueError):
    """A study that cannot run as asked: bad spec, unreachable or locked storage, unknown study name."""


@dataclasses.dataclass(frozen=True)
class StudyContext:
    """What ``suggest`` may depend on besides the trial: the pretrained source run and the artefact root."""

    source_dir: Path | None
    out_dir: Path
    dataset: str | None = None  # the target data set chosen at the command line (None: the spec's default)
    data: DataSettings = dataclasses.field(default_factory=DataSettings)  # where data sets live, downloads allowed
    sources: dict[str, Path] = dataclasses.field(default_factory=dict)  # the zoo's pretrained runs, by name


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
    # the source zoo: pretrained runs a trial may start from, by name (each trained once, cached like ``source``;
    # ``StudyContext.sources`` holds their folders); ``source`` is the default one and need not be listed
    zoo: dict[str, RunConfig] = dataclasses.field(default_factory=dict)
    # how a zoo member pretrains when not as ``source_execution`` (by zoo name), e.g. eager where a compile costs
    # more than it saves
    zoo_execution: dict[str, Execution] = dataclasses.field(default_factory=dict)
    baselines: Callable[[StudyContext], dict[str, RunConfig]] | None = None
    eval_seeds: tuple[int, ...] = (101, 102, 103)
    # the data sets the final evaluation trains and scores every contender on, given the study's target: other
    # long-tail draws, so figures vary beyond training noise (None: the target alone); each draw x eval seed is
    # one paired run
    eval_draws: Callable[[str], tuple[str, ...]] | None = None
    # pretrained sources the evaluation fine-tunes from: the best's source, and ``eval_sources - 1`` more
    # pretrainings of its recipe on the next seeds; eval seed i fine-tunes source ``i % eval_sources``, so the
    # figures vary over pretraining seeds as well as draws and fine-tuning seeds
    eval_sources: int = 1
    # at least this many paired runs in the evaluation: where draws x eval_seeds give fewer (a user's folder is
    # one draw), more eval seeds are added, each on a pretrained source of its own where eval_sources > 1, so
    # a folder's verdict rests on as many independent units as the built-in target's (0: as the seeds say)
    min_paired_runs: int = 0
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
    # how trials, re-runs and contenders execute (eager: compiled, the trials of one structure share one step, but
    # a compile costs 4-40 s against well under a second saved per trial here; see studies/optdigits_longtail.py),
    # and how the pretrained source trains (a recipe: compiled)
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
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise StudyError(f"study {self.name!r}: unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
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
        if self.zoo and self.source is None:
            raise StudyError(f"study {self.name!r}: a source zoo needs a default source (source=...)")
        unknown_zoo = sorted(set(self.zoo_execution) - set(self.zoo))
        if unknown_zoo:
            raise StudyError(f"study {self.name!r}: zoo_execution names {unknown_zoo}, which the zoo lacks")
        if self.eval_sources < 1 or (self.eval_sources > 1 and self.source is None):
            raise StudyError(f"study {self.name!r}: eval_sources must be >= 1, and > 1 needs a source")
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

    def with_pruner(self, name: str | None) -> StudySpec:
        """This spec with the pruner ``PRUNERS[name]`` (None: unchanged); ``hwr study run --pruner``."""
        if name is None:
            return self
        if name not in PRUNERS:
            raise StudyError(f"unknown pruner {name!r}; choose one of {sorted(PRUNERS)}")
        return dataclasses.replace(self, pruner=PRUNERS[name])

    def on_device(self, device: str | None) -> StudySpec:
        """This spec with every run on ``device`` (None: unchanged)."""
        if device is None:
            return self
        return dataclasses.replace(
            self,
            execution=dataclasses.replace(self.execution, device=device),
            source_execution=dataclasses.replace(self.source_execution, device=device),
            zoo_execution={k: dataclasses.replace(v, device=device) for k, v in self.zoo_execution.items()},
        )

    def pretraining(self, name: str | None = None) -> tuple[RunConfig, Execution]:
        """The source config and execution of zoo member ``name`` (None: the default ``source``)."""
        if name is None:
            if self.source is None:
                raise StudyError(f"study {self.name!r} has no source")
            return self.source, self.source_execution
        return self.zoo[name], self.zoo_execution.get(name, self.source_execution)

    def pretrainings(self) -> list[tuple[RunConfig, Execution]]:
        """Every source the study pretrains (the default one, then the zoo's), each once."""
        seen: dict[str, tuple[RunConfig, Execution]] = {}
        for name in (None, *self.zoo) if self.source is not None else ():
            cfg, ex = self.pretraining(name)
            seen.setdefault(repr(cfg), (cfg, ex))
        return list(seen.values())


# The pruners a study may run under (``StudySpec.with_pruner``), each reading the first metric per epoch.
# ``halving``: asynchronous successive halving (Li et al. 2020) with rungs at 2, 6 and 18 epochs, keeping the top
# third at each: more configurations get a first look for the same budget. ``hyperband`` runs several such
# brackets; ``median`` stops a trial below the median of earlier ones at the same epoch.
PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner] | None] = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=10),
    "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=2, max_resource=30, reduction_factor=3),
    "none": None,
}


def pruner_epochs(pruner: optuna.pruners.BasePruner | None) -> Callable[[int], bool]:
    """The epochs (1-based) whose validation figure ``pruner`` reads, as a predicate: for successive halving and
    Hyperband, the rung steps ``min_resource * reduction_factor ** k`` (a trial reports epoch ``e`` as step
    ``e - 1``; SuccessiveHalvingPruner.prune reads the value of the step that reaches a rung); none without a
    pruner (``NopPruner``); every epoch for any other (the median pruner reads them all) or where the rungs are
    not fixed (``min_resource="auto"``). A trial validates at these epochs and its last, so the pruner decides as
    it did when every epoch was validated (the same values at the same steps), for a fraction of the cost."""
    if pruner is None or isinstance(pruner, optuna.pruners.NopPruner):
        return lambda epoch: False
    halving = (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner)
    low, factor = getattr(pruner, "_min_resource", None), getattr(pruner, "_reduction_factor", None)
    if not isinstance(pruner, halving) or not isinstance(low, int) or not isinstance(factor, int) or factor < 2:
        return lambda epoch: True

    def rung(epoch: int) -> bool:
        step = epoch - 1
        while step > low and step % factor == 0:
            step //= factor
        return step == low

    return rung


METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
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
            known = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "studies").glob("[a-z]*.py"))
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
