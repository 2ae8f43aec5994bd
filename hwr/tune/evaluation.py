"""The final evaluation of a study: name a winner on validation, then read the test split once.

1. **Selection.** The ``rerun_top`` best trials are trained again on fresh ``rerun_seeds`` and ranked by the mean
   of their validation metric over the original run and the re-runs, so one lucky seed does not win; the study's
   start is re-run beside them on the same seeds, and the search names something other than its untuned start only
   where that trial's re-runs beat the start's with a paired 95% interval above zero (``_winner``).
2. **Contenders**, each trained on ``eval_seeds`` (fresh again) and scored on the untouched test split:
   ``best`` (the winner), the spec's baselines (its ``reference`` among them: the untuned fine-tune), ``oracle``
   (the winner's recipe on balanced target data: a ceiling, not a contender) and ``zero_shot`` (the source model
   evaluated as is: the do-nothing baseline; only where the source predicts the target's classes, and otherwise
   ``not_applicable`` in the JSON says why: a digit source cannot read a folder of letters as it is).
3. **Report**: mean and spread of test macro-F1 and balanced accuracy, per-class F1 and its means over the
   many / medium / few-shot classes (thirds of the classes ranked by training images), the gains of the best over
   zero-shot, over the study's ``start`` (its first enqueued, untuned point, retrained like the best: what the
   search bought) and over the reference, each a paired difference over the same seeds and test images with its
   95% t interval (``hwr.tune.stats``; ``intervals`` in the JSON), and the winner's validation-test gap. Every
   contender fine-tunes the best's source. Written to
   ``runs/studies/NAME/evaluation.json``; a finished contender's run folder is reused, so an interrupted
   evaluation resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hwr import files, runs
from hwr.config import DataSettings, to_dict
from hwr.data import folders, sources
from hwr.engine.execution import Execution
from hwr.engine.train import NonFiniteLoss
from hwr.tasks import digits
from hwr.tasks.digits.config import RunConfig
from hwr.tune import stats
from hwr.tune.pool import parallel_map
from hwr.tune.spec import METRICS, StudyContext, StudyError, StudySpec
from hwr.tune.study import config_of, prepare_source, pretrain_job, train_fresh

__all__ = [
    "EVALUATION",
    "enough_runs",
    "eval_sources",
    "evaluate_best",
    "load_evaluation",
    "select",
    "shot_groups",
    "start_trial",
    "verdict",
]

EVALUATION = "evaluation.json"
OnRun = Callable[[str, int, dict[str, Any]], None]


def shot_groups(counts: list[int]) -> dict[str, list[int]]:
    """Classes split into ``many``, ``medium`` and ``few``-shot thirds by their training images (the long-tail
    convention, relative because small target sets have no class above ImageNet-LT's 100-image line)."""
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    k = len(order)
    a, b = round(k / 3), round(2 * k / 3)
    return {"many": order[:a], "medium": order[a:b], "few": order[b:]}


def _run(
    cfg: RunConfig, out: Path, callbacks: tuple, execution: Execution, data: DataSettings, *, test_split: bool = False
) -> dict[str, Any]:
    """A contender's (``test_split=True``) or re-run's (validation only) result: reused from ``out`` when it holds
    the finished run (``runs.finished``) of this same ``cfg`` with the figures asked for (an interrupted evaluation
    resumes), else trained afresh (``train_fresh``). A run whose loss turns NaN or infinite returns ``{"config":
    ..., "failed": why}`` instead of stopping the evaluation: runs are deterministic, so it would fail again on
    every retry, and one diverging seed must not leave a study that can never be evaluated."""
    if runs.finished(out):
        saved = json.loads((out / runs.METRICS).read_text())
        asked = saved.get("test") is not None or not test_split
        if saved.get("config") == to_dict(cfg) and asked and _same_data(cfg, saved, data):
            return saved
    try:
        return train_fresh(cfg, out, execution, data, callbacks, test_split=test_split, final_validation_only=True)
    except NonFiniteLoss as e:
        return {"config": to_dict(cfg), "failed": f"seed {cfg.seed}: {str(e).split(';')[0]}"}


def _same_data(cfg: RunConfig, saved: dict[str, Any], data: DataSettings) -> bool:
    """Whether a saved run trained on the data ``cfg`` names today: always for a built-in data set; for a user's
    folder or CSV (one name, whatever its files hold) only where the images' identity it recorded is the folder's
    now (``folders`` provenance ``digest``: an image added, removed, edited or relabelled since trains it again)."""
    if not folders.is_user_data(cfg.dataset):
        return True
    return saved.get("data_digest") == (sources.load(cfg.dataset, data).provenance or {}).get("digest")


def _run_job(
    cfg: RunConfig, out: Path, callbacks: tuple, execution: Execution, data: DataSettings, test_split: bool
) -> dict[str, Any]:
    """``_run`` with positional arguments only: one job of ``parallel_map``."""
    return _run(cfg, out, callbacks, execution, data, test_split=test_split)


def select(
    spec: StudySpec,
    study: optuna.Study,
    out_root: Path,
    *,
    callbacks: tuple = (),
    on_run: OnRun | None = None,
    data: DataSettings | None = None,
    workers: int = 1,
) -> tuple[optuna.trial.FrozenTrial, list[dict[str, Any]]]:
    """The winner among the ``spec.rerun_top`` best completed trials and the study's start (``start_trial``, re-run
    too where it is not among them), each re-run on ``spec.rerun_seeds`` (``workers`` at a time). Without a start,
    the best mean validation metric over the original run and the re-runs wins; with one, the start wins unless a
    trial beats it on the same re-run seeds with a paired 95% interval above zero (``_winner``): a lead within
    seed noise names nothing. Returns the winner and one row per candidate (its values, re-runs, mean, and
    ``vs_start``)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet; run: hwr study run ...")
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    ranked = sorted(done, key=lambda t: (-sign * t.values[0], t.number))[: spec.rerun_top]
    start = start_trial(spec, study) if spec.rerun_top > 1 else None
    if start is not None and start.number not in {t.number for t in ranked}:
        ranked.append(start)  # the search's winner must beat its own start on the same re-runs
    metric = spec.metrics[0]
    reruns = [(t, seed) for t in ranked for seed in spec.rerun_seeds] if spec.rerun_top > 1 else []
    cb = callbacks if workers <= 1 else ()  # progress callbacks stay in this process
    data = data or DataSettings()
    jobs = [
        (spec.protocol(dataclasses.replace(config_of(t), seed=seed)), out_root / f"rerun_{t.number}_seed{seed}")
        for t, seed in reruns
    ]
    jobs = [(cfg, out, cb, spec.execution, data, False) for cfg, out in jobs]

    def done(i: int, r: dict[str, Any]) -> None:
        if on_run:
            on_run(f"rerun #{reruns[i][0].number}", reruns[i][1], r)

    results = parallel_map(_run_job, jobs, workers, done)
    rows = [
        _rerun_row(t, [r for (u, _), r in zip(reruns, results, strict=True) if u.number == t.number], metric)
        for t in ranked
    ]
    healthy = [r for r in rows if "failed" not in r]
    if not healthy:
        raise StudyError(f"every re-run trial of study {study.study_name!r} diverged: {rows[0]['failed']}")
    base = start.number if start is not None and reruns and start.number in {r["trial"] for r in healthy} else None
    winner_row = _winner(healthy, base, sign)
    winner = next(t for t in ranked if t.number == winner_row["trial"])
    return winner, rows


def _rerun_row(t: optuna.trial.FrozenTrial, again: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """A candidate's selection row: its first figure (a pruned start has none: its re-runs alone), the re-runs'
    values and their mean; or, where a re-run diverged, ``failed`` with why (it is not ranked: a recipe that
    diverges on some seeds is not the one to name)."""
    failed = [r["failed"] for r in again if "failed" in r]
    if failed:
        return {"trial": t.number, "failed": "; ".join(failed)}
    first = [t.values[0]] if t.state == TrialState.COMPLETE else []
    values = first + [METRICS[metric](r) for r in again]
    return {"trial": t.number, "values": values, "reruns": values[len(first) :], "mean": statistics.fmean(values)}


def _winner(rows: list[dict[str, Any]], start: int | None, sign: float) -> dict[str, Any]:
    """The selected row. Without a start to beat: the best mean. With one: the start, unless a trial's re-runs beat
    the start's on the same seeds with a paired interval above zero (``stats.paired_interval`` over the re-run
    seeds; the trials' own first figures are left out, as the top trials were picked on them), the best re-run
    mean among those that do. The interval's level is Bonferroni's over the trials compared (``1 - 0.05 / k``), so
    a trial that is no better than the start is named at most 5% of the time however many are re-run; with fewer
    than 3 re-run seeds no trial can win (a t interval over 2 is 12.7 standard errors wide, and 2 equal
    differences, one validation image apart, would make it zero wide). Each row records its interval against the
    start (``vs_start``; in the direction the study optimises: positive is better than the start)."""
    if start is None:
        return max(rows, key=lambda r: (sign * r["mean"], -r["trial"]))
    base = next(r for r in rows if r["trial"] == start)
    others = [r for r in rows if r is not base]
    level = 1.0 - 0.05 / max(len(others), 1)
    beating = []
    for r in others:
        iv = stats.paired_interval([sign * v for v in r["reruns"]], [sign * v for v in base["reruns"]], level)
        r["vs_start"] = {"mean": iv.mean, "low": _finite(iv.low), "high": _finite(iv.high), "n": iv.n, "level": level}
        if iv.n >= 3 and iv.low > 0:
            beating.append(r)
    if not beating:
        return base
    return max(beating, key=lambda r: (sign * statistics.fmean(r["reruns"]), -r["trial"]))


def _finite(x: float) -> float | None:
    """``x``, or None (JSON null) where it is infinite: one paired unit has no interval."""
    return x if math.isfinite(x) else None


def _groups_f1(per_class: list[float], groups: dict[str, list[int]]) -> dict[str, float]:
    return {g: statistics.fmean(per_class[c] for c in cs) if cs else float("nan") for g, cs in groups.items()}


def _aggregate(runs: list[dict[str, Any]], cfg: RunConfig | None, groups: dict[str, list[int]]) -> dict[str, Any]:
    f1 = [r["test"]["macro_f1"] for r in runs]
    bal = [r["test"]["balanced_accuracy"] for r in runs]
    val = [r["val"]["macro_f1"] for r in runs if r.get("val")]
    per_class = [statistics.fmean(c) for c in zip(*(r["test"]["per_class"]["f1"] for r in runs))]
    out = {
        "macro_f1_mean": statistics.fmean(f1),
        "macro_f1_std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
        "macro_f1": f1,
        "balanced_accuracy_mean": statistics.fmean(bal),
        "balanced_accuracy_std": statistics.stdev(bal) if len(bal) > 1 else 0.0,
        "per_class_f1_mean": per_class,
        "shot_f1": _groups_f1(per_class, groups),
        "seeds": [r["config"]["seed"] for r in runs] if cfg is not None else [],
        "config": to_dict(cfg) if cfg is not None else None,
    }
    if val:
        out["val_macro_f1_mean"] = statistics.fmean(val)
    return out


def _zero_shot(source: Path, dataset: str, device: str, data: DataSettings) -> dict[str, Any]:
    """The source evaluated as is (it has no randomness), val and test: one run's result."""
    test = digits.evaluate_run(source, dataset, split="test", device=device, data=data)
    try:
        val = digits.evaluate_run(source, dataset, split="val", device=device, data=data)
    except runs.RunError:
        val = None
    return {"test": test, "val": val, "config": {"seed": None}, "source": str(source)}


def _with_zero_shot(
    trained: dict[str, list], scored: dict[str, list], sources: list, draws: tuple[str, ...], n_seeds: int, device, data
) -> tuple[dict[str, list], str | None]:
    """``trained`` with the zero-shot row first (each source as is, paired with the runs that fine-tune it; its
    runs added to ``scored``), or as it was and why there is none (the source lacks the target's classes)."""
    unknown = digits.unknown_classes(sources[0], draws[0], data=data)
    if unknown:  # a digit source cannot read a folder of letters: there is no do-nothing row to compare
        return trained, _no_zero_shot(sources[0], unknown)
    zero = {(p, d): _zero_shot(p, d, device, data) for p in sources for d in draws}
    scored["zero_shot"] = [(sources[i % len(sources)], d, 0) for d in draws for i in range(n_seeds)]
    return {"zero_shot": [zero[p, d] for p, d, _ in scored["zero_shot"]], **trained}, None


def _no_zero_shot(source: Path, unknown: tuple[str, ...]) -> str:
    """Why the evaluation has no zero-shot row: the target's classes the source does not predict."""
    shown = ", ".join(repr(c) for c in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
    return f"the source {source} does not predict the target's classes {shown}: it cannot be used as it is"


def _pretraining_of(spec: StudySpec, source: Path) -> tuple[RunConfig, Execution]:
    """The config ``source`` was pretrained with, and how the spec pretrains it (its zoo entry's execution)."""
    cfg = digits.read_config(source)
    return cfg, next((ex for c, ex in spec.pretrainings() if c == cfg), spec.source_execution)


def eval_sources(spec: StudySpec, source: Path | None, root: Path, data: DataSettings, workers: int = 1) -> list:
    """The sources the evaluation fine-tunes from: ``source`` and ``spec.eval_sources - 1`` more pretrainings of
    its recipe on the next seeds (``pretrain``: trained once, cached), ``workers`` at a time."""
    if source is None or spec.eval_sources <= 1:
        return [source]
    cfg, execution = _pretraining_of(spec, source)
    jobs = [(dataclasses.replace(cfg, seed=cfg.seed + j), root, execution, data) for j in range(1, spec.eval_sources)]
    return [source, *parallel_map(pretrain_job, jobs, workers)]


def enough_runs(spec: StudySpec, n_draws: int) -> StudySpec:
    """``spec`` with eval seeds added (the next integers after its last) until ``n_draws`` x seeds reaches
    ``spec.min_paired_runs``, and as many pretrained sources as seeds where it uses more than one: each added
    paired run is an independent unit (its own fine-tuning seed and pretraining seed), not a repeat of one."""
    need = -(-spec.min_paired_runs // max(n_draws, 1))
    seeds = spec.eval_seeds
    if len(seeds) >= need:
        return spec
    first = max(seeds, default=0) + 1
    seeds = (*seeds, *range(first, first + need - len(seeds)))
    sources = max(spec.eval_sources, len(seeds)) if spec.eval_sources > 1 else 1
    return dataclasses.replace(spec, eval_seeds=seeds, eval_sources=sources)


def _from_source(cfg: RunConfig, sources: list, i: int) -> RunConfig:
    """``cfg`` fine-tuning source ``i % len(sources)`` where it fine-tunes the first (a scratch run stays)."""
    if cfg.finetune is None or len(sources) < 2 or cfg.finetune.source != str(sources[0]):
        return cfg
    return dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, source=str(sources[i % len(sources)])))


def start_trial(spec: StudySpec, study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's starting point: the completed trial that ran ``spec.initial[0]`` (the first enqueued, untuned
    point; Optuna keeps an enqueued trial's parameters in its ``fixed_params`` system attribute), or None."""
    if not spec.initial:
        return None
    first = spec.initial[0]
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        fixed = t.system_attrs.get("fixed_params")
        if fixed is not None and all(fixed.get(k) == v for k, v in first.items()) and "config" in t.user_attrs:
            return t
    return None


def _contenders(
    spec: StudySpec, best_cfg: RunConfig, context: StudyContext, start_cfg: RunConfig | None = None
) -> dict[str, RunConfig]:
    """``best``, the study's ``start`` (retrained like the best), the spec's baselines and the oracle ceiling,
    each under the spec's validation protocol."""
    contenders: dict[str, RunConfig] = {"best": best_cfg}
    if start_cfg is not None:
        contenders["start"] = start_cfg
    contenders |= {k: spec.protocol(v) for k, v in (spec.baselines(context) if spec.baselines else {}).items()}
    ceiling = spec.oracle(best_cfg, context) if spec.oracle is not None else None
    if ceiling is not None:  # None: the target has no balanced counterpart
        contenders["oracle"] = spec.protocol(ceiling)
    return contenders


def _train_contenders(
    spec: StudySpec,
    contenders: dict[str, RunConfig],
    out_root: Path,
    callbacks: tuple,
    on_run: OnRun | None,
    data,
    draws: tuple[str, ...],
    sources: list,
    workers: int = 1,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[tuple[Path, str, int]]], dict[str, str]]:
    """Every contender trained on every draw x ``spec.eval_seeds`` (the same order for all: runs pair by index;
    eval seed i fine-tunes source ``i % len(sources)``), its data set replaced by the draw's, ``workers`` runs
    at a time; their results by label, each run's folder, data set and test limit (to score it image by image), and
    the contenders left out because a run's loss diverged (label -> why: their other runs cannot be paired)."""
    slots: list[tuple[str, int, int, Path]] = []  # (label, draw, seed, folder) in pairing order
    jobs: dict[Path, tuple] = {}  # one job per folder: a contender the draw leaves as it is trains once
    folder_of: dict[str, Path] = {}  # one folder per run config: a best that is the start trains once
    cb = callbacks if workers <= 1 else ()
    for label, cfg in contenders.items():
        for d, draw in enumerate(draws):
            on_draw = cfg if d == 0 else dataclasses.replace(cfg, dataset=_redraw(cfg.dataset, draws[0], draw))
            for i, s in enumerate(spec.eval_seeds):
                run_cfg = dataclasses.replace(_from_source(on_draw, sources, i), seed=s)
                name = f"{label}_seed{s}" if on_draw == cfg else f"{label}_draw{d}_seed{s}"
                out = folder_of.setdefault(json.dumps(to_dict(run_cfg), sort_keys=True), out_root / name)
                jobs.setdefault(out, (run_cfg, out, cb, spec.execution, data, True))
                slots.append((label, d, s, out))
    order = list(jobs)
    first = {out: next(k for k, slot in enumerate(slots) if slot[3] == out) for out in order}

    def done(j: int, r: dict[str, Any]) -> None:
        label, d, s, _ = slots[first[order[j]]]
        if on_run:
            on_run(label if d == 0 else f"{label} draw {d}", s, r)

    by_folder = dict(zip(order, parallel_map(_run_job, [jobs[o] for o in order], workers, done), strict=True))
    failed: dict[str, str] = {}  # the first run's reason, and how many of the contender's runs diverged
    for label in contenders:
        why = [by_folder[out]["failed"] for lab, _, _, out in slots if lab == label and "failed" in by_folder[out]]
        if why:
            failed[label] = why[0] + (f"; {len(why)} of its runs" if len(why) > 1 else "")
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in contenders if label not in failed}
    scored: dict[str, list[tuple[Path, str, int]]] = {label: [] for label in results}
    for label, _, _, out in slots:
        if label in results:
            results[label].append(by_folder[out])
            scored[label].append((out, jobs[out][0].dataset, jobs[out][0].limit_test))
    return results, scored, failed


def _diverged(failed: dict[str, str], best_trial: int) -> dict[str, str]:
    """The ``not_applicable`` entries of the contenders whose training diverged; a best that diverged is an error
    (nothing is left to report on it)."""
    if "best" in failed:
        raise StudyError(
            f"the selected trial #{best_trial} diverged on an evaluation run ({failed['best']}); its recipe is "
            "unstable: lower its learning rate or add gradient clipping in the study module and evaluate again"
        )
    return {label: f"its training diverged ({why}): left out" for label, why in failed.items()}


def _redraw(dataset: str, target: str, draw: str) -> str:
    """A contender's data set on another draw: the draw's name where it trained on the target (the oracle's
    balanced set stays itself)."""
    return draw if dataset == target else dataset


def _spreads(agg: dict[str, Any], n_draws: int, n_seeds: int, n_sources: int) -> dict[str, Any]:
    """``agg`` with the mean test macro-F1 of each draw and of each pretrained source, and their spreads (the
    variation beyond fine-tuning noise); run ``d * n_seeds + i`` is draw d, eval seed i, source ``i % n_sources``."""
    f1 = agg["macro_f1"]
    draws = [statistics.fmean(f1[d * n_seeds : (d + 1) * n_seeds]) for d in range(n_draws)]
    out = {**agg, "draw_macro_f1_means": draws, "draw_macro_f1_std": statistics.stdev(draws) if n_draws > 1 else 0.0}
    if n_sources > 1:
        srcs = [
            statistics.fmean(f1[k] for k in range(len(f1)) if k % n_seeds % n_sources == j) for j in range(n_sources)
        ]
        out |= {"source_macro_f1_means": srcs, "source_macro_f1_std": statistics.stdev(srcs)}
    return out


def _draws(spec: StudySpec, target: str) -> tuple[str, ...]:
    """The data sets of the evaluation: the target first, then the spec's other draws of it."""
    others = spec.eval_draws(target) if spec.eval_draws is not None else ()
    return (target, *(d for d in others if d != target))


def _compared(reference: str | None, contenders: Any) -> list[str]:
    """What the best is compared with, in this order: zero-shot, the study's start, the reference, then every other
    baseline (not the oracle: a ceiling, not a contender); only those in ``contenders``."""
    names = ("zero_shot", "start", reference, *(k for k in contenders if k not in ("best", "oracle")))
    return [k for k in dict.fromkeys(names) if k and k in contenders]


def _gains(results: dict[str, Any], reference: str | None) -> dict[str, Any]:
    """The best's paired gains over zero-shot, the study's start, the reference and every other baseline: per-seed differences of test
    macro-F1 (the same seed, source and test images; ``hwr.tune.stats.paired_interval``), and its
    validation-test gap."""
    out: dict[str, Any] = {"intervals": {}}
    best = results["contenders"]["best"]
    for ref in _compared(reference, results["contenders"]):
        if ref and ref in results["contenders"]:
            other = results["contenders"][ref]
            iv = stats.paired_interval(best["macro_f1"], other["macro_f1"])
            out[f"gain_macro_f1_vs_{ref}"] = iv.mean
            out["intervals"][ref] = {
                "mean": iv.mean,
                "low": _finite(iv.low),
                "high": _finite(iv.high),
                "n": iv.n,
                "level": iv.level,
            }
    if "val_macro_f1_mean" in best:
        out["selected_val_test_gap"] = best["val_macro_f1_mean"] - best["macro_f1_mean"]
    return out


def evaluate_best(
    spec: StudySpec,
    study: optuna.Study,
    *,
    root: Path = Path("runs"),
    callbacks: tuple = (),
    on_run: OnRun | None = None,
    data: DataSettings | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Select the winner (``select``), train every contender on ``spec.eval_seeds`` and score it on the test
    split, ``workers`` runs at a time (``hwr.tune.pool``: the same figures however many); returns (and writes
    ``evaluation.json``) the table described in the module docstring."""
    data = data or DataSettings()
    study_root = root / "studies" / study.study_name
    out_root = study_root / "evaluation"
    winner, selection = select(spec, study, out_root, callbacks=callbacks, on_run=on_run, data=data, workers=workers)
    best_cfg = spec.protocol(config_of(winner))
    start = start_trial(spec, study)
    start_cfg = spec.protocol(config_of(start)) if start is not None else None
    source = prepare_source(spec, root, data=data)
    if best_cfg.finetune is not None:  # every contender starts from the best's source (the zoo's choice)
        source = Path(best_cfg.finetune.source)
    context = StudyContext(source, study_root, study.user_attrs.get("dataset"), data)
    contenders = _contenders(spec, best_cfg, context, start_cfg)
    draws = _draws(spec, best_cfg.dataset)
    spec = enough_runs(spec, len(draws))
    sources = eval_sources(spec, source if best_cfg.finetune is not None else None, root, data, workers)
    trained, scored, failed = _train_contenders(
        spec, contenders, out_root, callbacks, on_run, data, draws, sources, workers
    )
    not_applicable = _diverged(failed, winner.number)
    counts = trained["best"][0].get("train_class_counts")
    groups = shot_groups(counts) if counts else {}
    n_seeds = len(spec.eval_seeds)
    if source is not None and best_cfg.finetune is not None:
        trained, why = _with_zero_shot(trained, scored, sources, draws, n_seeds, spec.execution.device, data)
        not_applicable |= {"zero_shot": why} if why else {}
    results: dict[str, Any] = {
        "study": study.study_name,
        "best_trial": winner.number,
        "start_trial": start.number if start is not None else None,
        "draws": list(draws),
        "seeds": list(spec.eval_seeds),
        "sources": [str(p) for p in sources if p is not None],
        "selection": selection,
        "shot_groups": groups,
        "contenders": {
            label: _spreads(_aggregate(rs, contenders.get(label), groups), len(draws), n_seeds, len(sources))
            for label, rs in trained.items()
        },
        "ceilings": ["oracle"] if "oracle" in contenders else [],
        "not_applicable": not_applicable,
    }
    results |= _gains(results, spec.reference)
    results["intervals_images"] = _image_intervals(scored, spec.reference, data, spec.execution.device)
    files.write_json(study_root / EVALUATION, results)
    return results


def _image_intervals(
    scored: dict[str, list[tuple[Path, str, int]]], reference: str | None, data: DataSettings, device: str
) -> dict[str, Any]:
    """The best's gains over zero-shot, the start and the reference with intervals that resample the test images
    as well as the paired runs (``stats.image_bootstrap``), from every run's prediction of every test image; a
    comparison whose runs were not scored on the same images in the same order gets none, and so does one with a
    run that cannot be read back (its checkpoint gone: the runs-only interval still stands)."""
    memo: dict[tuple[Path, str, int], tuple[Any, Any]] = {}

    def predicted(units: list[tuple[Path, str, int]]) -> tuple[list, list] | None:
        try:
            for unit in units:
                if unit not in memo:
                    memo[unit] = digits.predict_run(unit[0], unit[1], data=data, device=device, limit_test=unit[2])
        except (runs.RunError, OSError):
            return None
        return [memo[u][0] for u in units], [memo[u][1] for u in units]

    out: dict[str, Any] = {}
    got = predicted(scored["best"]) if "best" in scored else None
    if got is None or not len(got[1][0]):
        return out
    best, truth = got
    for ref in _compared(reference, scored):
        theirs = predicted(scored[ref]) if ref and ref in scored and len(scored[ref]) == len(best) else None
        if theirs is None:
            continue
        other, labels = theirs
        if any(not torch.equal(t, truth[0]) for t in [*truth, *labels]):
            continue  # not the same test images: no image-paired interval
        # classes by index: one that is in no label and no prediction does not count in a macro-F1 anyway
        k = int(max(t.max() for t in [*best, *other, truth[0]])) + 1
        iv = stats.image_bootstrap(torch.stack(best), torch.stack(other), truth[0], k)
        out[ref] = {"mean": iv.mean, "low": _finite(iv.low), "high": _finite(iv.high), "n": iv.n, "level": iv.level}
    return out


def load_evaluation(root: Path, study_name: str) -> dict[str, Any] | None:
    """The ``evaluation.json`` of a study, or None when ``hwr study best --evaluate`` has not run yet."""
    path = root / "studies" / study_name / EVALUATION
    return json.loads(path.read_text()) if path.is_file() else None


_NAMES = {"zero_shot": "zero-shot (the source as is)", "start": "the study's start"}


def _interval(iv: dict[str, Any]) -> stats.Interval:
    """An interval as ``evaluation.json`` stores it (None for an unbounded end) as a ``stats.Interval``."""
    low, high = (-math.inf if iv["low"] is None else iv["low"]), (math.inf if iv["high"] is None else iv["high"])
    return stats.Interval(iv["mean"], low, high, iv["n"], iv.get("level", 0.95))


def verdict(result: dict[str, Any]) -> list[str]:
    """Plain sentences about an evaluation: each paired gain with its 95% intervals, "beats" only where both the
    runs-only and the images-resampled interval exclude zero, a warning when the best loses to doing nothing, and a
    note when the search did not beat its own starting point."""
    lines = [f"{_NAMES.get(k, k)}: not applicable ({why})" for k, why in result.get("not_applicable", {}).items()]
    for ref, iv in result.get("intervals", {}).items():
        runs_only = _interval(iv)
        images = result.get("intervals_images", {}).get(ref)
        interval = _interval(images) if images else runs_only
        name = _NAMES.get(ref, ref)
        # "beats" needs both estimates: the t interval over the runs (their noise, t-quantiles for few runs) and
        # the bootstrap over runs and images (the test images' own chance); either can be the wider one
        words = stats.wording(runs_only, interval)
        n = iv["n"]
        bounds = (
            f"95% interval [{100 * runs_only.low:+.2f}, {100 * runs_only.high:+.2f}]"
            if n > 1
            else "one run: no interval"
        )
        bounds = f"{bounds} over {n} paired runs"
        if images:
            alone = f" ({bounds} alone)" if n > 1 else ""
            bounds = (
                f"95% interval [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}] resampling the {n} paired "
                f"run{'s' if n > 1 else ''} and the test images{alone}"
            )
        lines.append(f"best {words} {name}: {100 * iv['mean']:+.2f} macro-F1 points, {bounds}")
        if ref == "zero_shot" and words != "beats":
            lines.insert(0, "WARNING: the study's best does not beat the source model used as is (zero-shot)")
        if ref == "start" and words != "beats":
            lines.append("the search did not beat its own untuned starting point")
    lines.extend(_selection_lines(result))
    if "selected_val_test_gap" in result:
        lines.append(
            f"selected trial #{result['best_trial']}: validation - test macro-F1 gap "
            f"{100 * result['selected_val_test_gap']:+.2f} points"
        )
    return lines


def _selection_lines(result: dict[str, Any]) -> list[str]:
    """How the winner was named against the study's start (``_winner``): the winning trial's paired re-run interval,
    or why the start stayed (the trial that came closest). Nothing for an evaluation without a start."""
    rows = [r for r in result.get("selection", []) if "vs_start" in r]
    if not rows or result.get("start_trial") is None:
        return []

    def gap(r: dict[str, Any]) -> str:
        iv = r["vs_start"]
        bounds = "no interval" if iv["low"] is None else f"[{100 * iv['low']:+.2f}, {100 * iv['high']:+.2f}]"
        return f"#{r['trial']} {100 * iv['mean']:+.2f} points {bounds} over {iv['n']} re-run seeds"

    level = f"{100 * rows[0]['vs_start'].get('level', 0.95):.4g}%"
    if result["best_trial"] != result["start_trial"]:
        won = next(r for r in rows if r["trial"] == result["best_trial"])
        return [f"selected trial #{result['best_trial']}: its re-runs beat the start's, {gap(won)} ({level} interval)"]
    closest = max(rows, key=lambda r: r["vs_start"]["mean"])
    return [
        f"selected the start (#{result['start_trial']}): no trial's re-runs beat it with a {level} interval above "
        f"zero (closest: {gap(closest)})"
    ]
