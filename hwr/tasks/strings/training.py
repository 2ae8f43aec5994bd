"""Digit strings end to end: ``run(config, out_dir)`` trains a CTC model on synthetic strings composed from MNIST
digits and writes a run folder through ``hwr.runs``, as the digit task does:

    config.json               everything needed to rerun (StringsConfig, ``"task": "strings"``)
    checkpoint.safetensors    TrainState + metadata (epochs done, history, normalisation, model), every epoch
    metrics.json              per-epoch records, validation and test figures (CER, string accuracy, by length)

Training strings are drawn afresh for every step from the training digits (keyed by seed, epoch and step, so a
resumed run sees the same strings); validation and test strings are fixed sets from the held-out and the test
digits. The objective and evaluation are ``hwr.tasks.strings.step``'s; the step is built by
``hwr.engine.execution`` like every step (eager, or compiled with the autotuned candidate). Library code prints
nothing; progress comes through ``hwr.engine.train.Callback``s.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hwr import models, optim, random, runs, tree
from hwr.config import DataSettings, to_dict
from hwr.data import clean, sources
from hwr.data import strings as ds
from hwr.engine import execution as ex
from hwr.engine import train
from hwr.engine.execution import Execution
from hwr.models import Model
from hwr.runs import RunError
from hwr.tasks.strings.config import TASK, StringsConfig
from hwr.tasks.strings.step import StringBatches, ctc_objective, evaluate

__all__ = [
    "VAL_SEED",
    "Prepared",
    "StringsFigures",
    "is_strings_run",
    "load_run",
    "make_step",
    "prepare",
    "read_config",
    "run",
    "validation_set",
]

VAL_SEED = ds.TEST_SEED + 1  # the fixed validation strings' seed (the test strings': ds.TEST_SEED)


class StringsFigures(NamedTuple):
    """What a finished strings run hands its ``draw`` callback: the trained model and the test strings it was
    scored on (so the caller draws readings without loading or rendering anything again)."""

    model: Model
    params: Any
    model_state: Any
    test: ds.Strings
    mean: float
    std: float
    alphabet: str = ds.DIGITS


class Prepared(NamedTuple):
    """Everything a strings run derives from its config before the first step."""

    config: StringsConfig
    model: Model
    optimizer: optim.GradientTransformation
    params: Any
    model_state: Any
    pools: dict[str, ds.DigitPool]
    val: ds.Strings
    test: ds.Strings
    mean: float
    std: float
    transferred: list[str]


def _stem(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in flat.items() if k.startswith("block")}


def _model(config: StringsConfig, device: torch.device) -> tuple[Model, Any, Any, list[str]]:
    """The crnn, its initial parameters and state on ``device``, and the names taken from ``config.source`` (its
    conv stem: the ``block*`` parameters and statistics of the same names and shapes, ``hwr.runs.transfer``)."""
    model = models.get(config.model, config.crnn)
    k_model = random.split(random.key(config.seed))[0]
    params = model.init(random.fold_in(k_model, 0).to(device))
    model_state = tree.map(lambda t: t.to(device), model.init_state())
    if not config.source:
        return model, params, model_state, []
    src_params, src_state = (_stem(t) for t in runs.read_source(config.source))
    params, fresh = runs.transfer(src_params, params, strict=False)  # the stem only, by name and shape
    model_state, _ = runs.transfer(src_state, model_state, strict=False)
    kept = sorted(set(tree.flatten_names(params)) - set(fresh))
    if not kept:
        raise RunError(
            f"--from {config.source}: none of its parameters fits the crnn's conv stem (by name and shape); start "
            "from a digit CNN whose first blocks have the crnn's channels (e.g. a run of hwr train --recipe fast)"
        )
    return model, params, model_state, kept


def prepare(config: StringsConfig, data: DataSettings | None = None, *, device: str | torch.device = "cpu") -> Prepared:
    """Digit pools from the fixed splits, the fixed validation and test strings, the model (its conv stem from
    ``config.source`` when given) and the optimizer. Bad input raises here, before anything compiles."""
    device = torch.device(device)
    d = sources.load(config.dataset, data or DataSettings(), device=device)
    if d.num_classes != 10:
        raise RunError(f"{config.dataset} has {d.num_classes} classes; strings are made of the 10 digits")
    pools = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)
    mean, std = clean.normalization_stats(pools["train"].images)
    val = ds.fixed_set(pools["val"], config.val_strings, config.data, seed=VAL_SEED)
    test = ds.fixed_set(pools["test"], config.test_strings, config.data)
    model, params, model_state, kept = _model(config, device)
    optimizer = optim.from_config(config.optim, config.steps * config.epochs)
    return Prepared(config, model, optimizer, params, model_state, pools, val, test, mean, std, kept)


def validation_set(
    config: StringsConfig, data: DataSettings | None = None, *, device: str | torch.device = "cpu"
) -> ds.Strings:
    """The fixed validation strings of a run of ``config`` (those ``prepare`` gives it), without its model or a
    source run: what a trained run's reject threshold is fitted on."""
    d = sources.load(config.dataset, data or DataSettings(), device=torch.device(device))
    pools = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)
    return ds.fixed_set(pools["val"], config.val_strings, config.data, seed=VAL_SEED)


def is_strings_run(run_dir: str | Path) -> bool:
    """True if ``run_dir/config.json`` names the strings task (False for digit runs and for non-run folders)."""
    try:
        return runs.task_of(run_dir) == TASK
    except RunError:
        return False


def read_config(run_dir: str | Path) -> StringsConfig:
    """The ``StringsConfig`` of a strings run folder, with clear errors for anything else (``hwr.runs``)."""
    return runs.read_config(run_dir, StringsConfig, TASK)


def make_step(p: Prepared, execution: Execution | None = None) -> Callable[[train.TrainState, Any], Any]:
    """The pure, uncompiled train step ``run`` compiles for ``p`` under ``execution`` (``bf16``: the model under
    autocast, float32 logits, so the CTC recursion stays in float32; ``channels_last``: NHWC convolutions)."""
    objective = ctc_objective(p.model.config, mean=p.mean, std=p.std)
    return ex.eager_step(execution or Execution(), p.model, p.optimizer, objective)


def _autotune_tag(config: StringsConfig) -> str:
    """What besides the model and the batch shapes shapes the step's graph (autotune's cache key)."""
    what = [to_dict(config.data), to_dict(config.optim), config.steps * config.epochs]
    return "strings:" + hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


class _Setup(NamedTuple):
    p: Prepared
    state: train.TrainState
    start: int
    history: list[dict[str, Any]]
    meta: dict[str, Any]
    batches_of: Callable[[int], StringBatches]


def _setup(config: StringsConfig, device: torch.device, out: Path, resume: bool, data: DataSettings | None) -> _Setup:
    p = prepare(config, data, device=device)
    k_train, k_data = random.split(random.split(random.key(config.seed))[1])
    state = train.init_state(p.model, p.optimizer, k_train.to(device), params=p.params, model_state=p.model_state)
    meta = {
        "task": TASK,
        "model": p.model.name,
        "model_config": to_dict(p.model.config),
        "data": to_dict(config.data),
        "classes": list(config.data.alphabet),  # class k reads classes[k] (the blank follows them)
        "mean": p.mean,
        "std": p.std,
        "compile_seconds": 0.0,
    }
    start, history = 0, []
    if resume:
        state, start, history, saved = runs.resume(out, state, TASK)
        meta["compile_seconds"] = saved.get("compile_seconds", 0.0)
        meta["candidate"] = saved.get("candidate")  # the compile candidate it started with: kept (keep_candidate)
    batches_of = lambda epoch: StringBatches(
        random.fold_in(k_data, epoch), p.pools["train"], config.data, config.batch_size, config.steps
    )
    return _Setup(p, state, start, history, meta, batches_of)


def _build_step(config: StringsConfig, execution: Execution, s: _Setup) -> tuple[Any, dict[str, Any], float]:
    """The step ``execution`` asks for (``hwr.engine.execution.train_step``), its record and its build seconds."""
    if s.start >= config.epochs:  # every epoch trained: the run only finishes
        return make_step(s.p, execution), {"compile": None, "memory_format": None}, 0.0
    objective = ctc_objective(s.p.model.config, mean=s.p.mean, std=s.p.std)
    t0 = time.perf_counter()
    step, built = ex.train_step(
        execution, s.p.model, s.p.optimizer, objective, s.state, s.batches_of(s.start)[0], tag=_autotune_tag(config)
    )
    return step, built, time.perf_counter() - t0 if execution.compile else 0.0


def run(
    config: StringsConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[train.Callback] = (),
    data: DataSettings | None = None,
    execution: Execution | None = None,
    draw: Callable[[Path, StringsFigures], Any] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` under ``execution`` (default ``Execution()``: the first CUDA GPU when
    usable, else the CPU, the step compiled and autotuned) and return the contents of ``metrics.json``, as the
    digit task's ``run``: a finished run returns its metrics at once; ``resume=True`` continues from the last
    finished epoch to the same result, on any device; ``train.NonFiniteLoss`` keeps the last good checkpoint;
    ``RunError`` for a folder that cannot be used, ``ValueError`` for a device this machine lacks.
    ``draw(out, StringsFigures)`` receives what to draw once the test strings are scored."""
    out = Path(out_dir)
    with runs.locked(out):  # one process per run folder
        execution, device, done = runs.start(out, config, StringsConfig, resume, execution)
        if done is not None:
            return done
        s = _setup(config, device, out, resume, data)
        execution = ex.keep_candidate(execution, s.meta.get("candidate"), device)
        for cb in callbacks if s.start < config.epochs else ():
            cb.on_build(bool(execution.compile))
        step, built, compile_seconds = _build_step(config, execution, s)
        s.meta["candidate"] = built.get("candidate") or s.meta.get("candidate")
        s.meta["compile_seconds"] += compile_seconds
        p = s.p

        def validate(st: train.TrainState) -> dict[str, Any]:
            v = evaluate(p.model, st.params, st.model_state, p.val, mean=p.mean, std=p.std)
            return {"val_loss": v["loss"], "val_cer": v["cer"], "val_accuracy": v["string_accuracy"]}

        saver = runs.Checkpointer(out / runs.CHECKPOINT, s.meta, s.history)
        state, _ = train.fit(
            s.state,
            step,
            s.batches_of,
            epochs=config.epochs,
            evaluate=validate,
            callbacks=[*callbacks, saver],
            start_epoch=s.start,
            sync_every=execution.sync_every,
        )
        return _finish(config, execution, s, state, saver.history, built, out, draw, device)


def _finish(
    config: StringsConfig,
    execution: Execution,
    s: _Setup,
    state: train.TrainState,
    history: list[dict[str, Any]],
    built: dict[str, Any],
    out: Path,
    draw: Callable[[Path, StringsFigures], Any] | None,
    device: torch.device,
) -> dict[str, Any]:
    """The test and validation evaluation, the figures, ``metrics.json`` and the final checkpoint."""
    p = s.p
    test = evaluate(p.model, state.params, state.model_state, p.test, mean=p.mean, std=p.std)
    val = evaluate(p.model, state.params, state.model_state, p.val, mean=p.mean, std=p.std)
    result = {
        "task": TASK,
        "config": to_dict(config),
        "model": p.model.name,
        "model_config": s.meta["model_config"],
        "num_params": tree.num_params(state.params),
        "epochs": history,
        "val": val,
        "test": test,
        "timing": runs.timing(history, s.meta["compile_seconds"], config.steps),
        "transferred": p.transferred,
        "execution": runs.execution_record(execution, device, s.start, built),
    }
    if draw is not None:  # the library draws nothing itself (the CLI passes a drawer)
        figures = StringsFigures(p.model, state.params, state.model_state, p.test, p.mean, p.std, config.data.alphabet)
        draw(out, figures)
    runs.finish(out, result, state, s.meta, config.epochs)
    return result


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Model, Any, Any, dict[str, Any]]:
    """``(model, params, model_state, metadata)`` of a trained strings run folder (``hwr.runs.load_run``); a digit
    run, or a checkpoint that is not a strings checkpoint, raises ``RunError``."""
    return runs.load_run(run_dir, device, TASK)


def alphabet_of(meta: dict[str, Any], run_dir: str | Path = "") -> str:
    """The characters a strings run reads, in class order, from its checkpoint metadata: ``classes`` (written
    since separators exist), else the digits and the separators its data spec names (a run from before reads
    digits only). A count that differs from the model's classes raises ``RunError``."""
    data = meta.get("data") or {}
    alphabet = "".join(meta["classes"]) if "classes" in meta else ds.DIGITS + str(data.get("separators", ""))
    classes = (meta.get("model_config") or {}).get("num_classes", len(alphabet))
    if classes != len(alphabet):
        raise RunError(
            f"{run_dir or 'the run'} names {len(alphabet)} characters ({alphabet}) but its model has {classes} "
            "classes; the checkpoint metadata is inconsistent: train the run again"
        )
    return alphabet
