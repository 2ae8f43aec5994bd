"""A training run as one library call: ``run(config, out_dir, execution=...)`` prepares data, model and optimizer
from a ``RunConfig`` (``hwr.tasks.digits.preparation``), builds the step the ``Execution`` asks for (eager, or autotuned and
compiled), fits with per-epoch validation and atomic checkpoints, evaluates on the test split and writes the
run folder:

    config.json               what the run is (RunConfig); where it ran is not part of it
    checkpoint.safetensors    TrainState + metadata (epochs done, history, normalisation, classes); device-neutral
    metrics.json              per-epoch records, final validation and test summaries, timings, and the execution
                              used (device and its name, compile choice, seconds per step)
    calibration.json          the temperature fitted on the validation split (``hwr.tasks.digits.calibrate``)
    confusion.png, errors.png the test confusion matrix and a grid of misclassified test images

The stages of ``run``: the folder (``hwr.runs.open_run``), ``_setup`` (prepare, the state, a resumed checkpoint),
``_build_step``, ``_train`` (the fit loop), ``_finish`` (post-training, final evaluation, writing). The run folder
machinery is ``hwr.runs``'s, shared with the strings task. The CLI and the studies are thin over this module; it
prints nothing (progress arrives through callbacks).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hwr import checkpoint, losses, metrics, optim, random, runs, tree
from hwr.config import DataSettings, to_dict
from hwr.data import augment as aug
from hwr.data import batches as bt
from hwr.data import mix as mixing
from hwr.data import sources, splits
from hwr.engine import execution as ex
from hwr.engine import runtime, train
from hwr.engine.execution import Execution
from hwr.models import Model
from hwr.runs import RunError
from hwr.tasks.digits import calibrate, finetune, preparation, selftrain
from hwr.tasks.digits.config import RunConfig
from hwr.tasks.digits.preparation import Prepared, prepare

__all__ = [
    "Draw",
    "RunFigures",
    "evaluate",
    "evaluate_run",
    "hyperparameters",
    "load_run",
    "make_batches",
    "make_step",
    "post_train",
    "run",
    "structure",
    "tuned",
    "unknown_classes",
]


def evaluate(
    model: Model,
    params: Any,
    model_state: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    mean: float,
    std: float,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class figures and confusion of a model on a labelled set, in
    batches of at most ``batch_size`` cut as evenly as the set allows: the padded last batch is never more than
    a few images (a 200-image validation split is one batch of 200, not one of 1,000 padded: a study trial's
    per-epoch validation cost five times its images)."""
    step = train.eval_step(model, num_classes, transform=aug.make_transform(None, mean, std))
    n = len(labels)
    size = -(-n // -(-n // batch_size)) if n else batch_size  # ceil(n / number of batches)
    totals = None
    with torch.inference_mode():
        for b in bt.batches(None, images, labels, size, shuffle=False, drop_last=False):
            totals = metrics.accumulate(totals, step(params, model_state, b))
    if totals is None:
        raise RunError("evaluation set is empty")
    return metrics.summarize(totals["confusion"], loss_sum=float(totals["loss_sum"]))


def make_step(config: RunConfig, p: Prepared, execution: Execution | None = None) -> ex.Step:
    """The pure, uncompiled train step of ``config`` (augmentation, mixing) under ``execution``'s memory format
    and precision, its values closed over as numbers; ``run`` trains the same step with its values as tensors
    (``tuned``), eager or compiled."""
    return ex.eager_step(execution or Execution(), p.model, p.optimizer, _objective(config, p))


def _objective(config: RunConfig, p: Prepared) -> train.Objective:
    return train.classifier(p.loss, transform=_train_transform(config, p), mix=config.mix)


def _train_transform(config: RunConfig, p: Prepared) -> train.Transform:
    return aug.make_transform(None if config.augment.is_identity() else config.augment, p.mean, p.std)


def hyperparameters(config: RunConfig, p: Prepared) -> dict[str, Any]:
    """Every continuous value of ``config``'s train step as tensors on the run's device: the optimizer's
    (``optim.hyperparameters``: learning rate, weight decay, the schedule's length from the epochs), the loss's
    (tau, class weights and prior, the deferred switch step), the augmentation's magnitudes, the mixing alphas and
    share, the normalisation, and for a fine-tune the learning-rate multipliers and the L2-SP strength and anchor."""
    device = p.keys.train.device
    total = p.steps_per_epoch * config.epochs
    scalar = lambda x: torch.tensor(float(x), dtype=torch.float64, device=device)
    identity = config.augment.is_identity()
    hp: dict[str, Any] = {
        "optim": optim.hyperparameters(config.optim, total, device),
        "loss": losses.hyperparameters(config.loss, p.counts, device, total_steps=total),
        "augment": None if identity else aug.hyperparameters(config.augment, tuple(p.train[0].shape[-2:]), device),
        "mix": mixing.hyperparameters(config.mix, device),
        "mean": scalar(p.mean),
        "std": scalar(p.std),
    }
    ft = config.finetune
    if ft is not None and ft.l2sp > 0:
        hp |= {"l2sp": scalar(ft.l2sp), "anchor": p.source_params}
    if _multiplied(config):
        hp["multipliers"] = tree.map(scalar, finetune.lr_multipliers(p.params, ft.trainable, ft.backbone_lr_mult))
    return hp


def _multiplied(config: RunConfig) -> bool:
    ft = config.finetune
    return ft is not None and (ft.trainable != "all" or ft.backbone_lr_mult != 1.0)


def _parts(config: RunConfig, anchored: Any, hp: dict[str, Any]) -> tuple[optim.GradientTransformation, Any]:
    """The optimizer and objective of ``config``'s structure with the values ``hp`` (``hyperparameters``)."""
    ft = config.finetune
    extra = [optim.add_l2_toward(hp["anchor"], hp["l2sp"], anchored)] if ft is not None and ft.l2sp > 0 else []
    optimizer = optim.from_config(config.optim, 0, hp.get("multipliers"), extra=extra, hp=hp["optim"])
    loss = losses.make_loss(config.loss, hp=hp["loss"])
    objective = train.classifier(loss, transform=_transform_of(config)(hp), mix=config.mix, mix_hp=hp["mix"])
    return optimizer, objective


def _transform_of(config: RunConfig) -> Callable[[dict[str, Any]], train.Transform]:
    """``hp -> transform``: ``config``'s augmentation and normalisation with the values of ``hyperparameters``."""
    augment = None if config.augment.is_identity() else config.augment
    return lambda hp: aug.make_transform(augment, hp["mean"], hp["std"], hp["augment"])


_NUMBERS = {  # the values hyperparameters() carries: only whether each is on (non-zero) is structure
    "optim": ("lr", "warmup", "weight_decay", "momentum", "clip_norm"),
    "loss": ("power", "beta", "tau", "label_smoothing", "defer"),
    "augment": ("rotation", "translate", "scale", "shear", "elastic_alpha", "elastic_sigma", "erase_prob", "blur"),
    "mix": ("mixup", "cutmix", "prob"),
}
_NOT_THE_STEP = (  # what the batches, the fit loop, the data or post-training decide, never the step's graph
    "epochs",
    "seed",
    "dataset",
    "sampling",
    "classifier",
    "validation",
    "val_fraction",
    "folds",
    "fold",
    "limit_train",
    "limit_test",
    "recipe",
)


def structure(config: RunConfig, p: Prepared) -> str:
    """What of ``config`` shapes its train step's graph, as a string: ``config`` with every value that
    ``hyperparameters`` carries replaced by whether it is on, the run's actual model and image shape, and which
    parameters came from the source. Two configs of one structure share one compiled step."""
    d = to_dict(config)
    for part, names in _NUMBERS.items():
        d[part] |= {k: bool(d[part][k]) for k in names}
    d["augment"]["erase_scale"] = None
    d["loss"]["weighting"] = {"inverse": "weights", "effective": "weights"}.get(
        d["loss"]["weighting"], d["loss"]["weighting"]
    )
    if d["finetune"] is not None:
        ft = config.finetune
        d["finetune"] |= {"source": None, "wise": None, "l2sp": ft.l2sp > 0, "backbone_lr_mult": _multiplied(config)}
    d |= dict.fromkeys(_NOT_THE_STEP)
    d |= {"model": p.model.name, "model_config": repr(p.model.config), "image": list(p.train[0].shape[1:])}
    d["anchored"] = None if p.anchored is None else tree.flatten_names(p.anchored)
    return json.dumps(d, sort_keys=True, default=str)


def tuned(config: RunConfig, p: Prepared) -> ex.Tuned:
    """``config``'s train step as its structure and its values (``hwr.engine.execution.Tuned``): the optimizer,
    loss, augmentation and mixing built inside the step from ``hyperparameters``, so every config of one
    ``structure`` shares one compiled step in a process (a study's trials) and a new value never recompiles."""
    anchored = p.anchored
    return ex.Tuned(lambda hp: _parts(config, anchored, hp), hyperparameters(config, p), structure(config, p))


def _autotune_tag(config: RunConfig, p: Prepared) -> str:
    """What besides the model and the batch shapes shapes the step's graph (autotune's cache key): its
    ``structure``."""
    return "run:" + hashlib.sha1(structure(config, p).encode()).hexdigest()[:12]


def make_batches(config: RunConfig, p: Prepared, key: random.Key) -> Callable[[int], list[bt.Batch]]:
    """``epoch -> batches``: a keyed permutation per epoch, or ``config.sampling``'s class-aware draw."""
    x, y = p.train
    if config.sampling == "instance":
        return lambda epoch: bt.batches(random.fold_in(key, epoch), x, y, config.batch_size)
    power = bt.SAMPLING_POWERS[config.sampling]
    return lambda epoch: bt.sampled_batches(random.fold_in(key, epoch), x, y, config.batch_size, power=power)


def post_train(
    config: RunConfig, execution: Execution, p: Prepared, state: train.TrainState, key: random.Key
) -> tuple[Any, dict, dict[str, Any] | None]:
    """WiSE-FT, cRT, tau-normalisation and post-hoc logit adjustment as ``config`` asks (``hwr.tasks.digits.finetune``)
    on a trained ``state`` (``run``'s, and each trial's of ``hwr.tasks.digits.lockstep.train_lockstep``). Returns
    the final params (``state.params`` itself when nothing applies), a record of the choices made, and the honest
    validation summary of a WiSE-FT run (``_wise``; None otherwise: validation is measured afresh)."""

    hp = hyperparameters(config, p) if config.classifier.crt_epochs > 0 else {}

    def classifier_stages(params: Any) -> tuple[Any, dict]:
        record: dict[str, Any] = {}
        cc = config.classifier
        if cc.crt_epochs > 0:
            params = finetune.retrain_classifier(
                p.model,
                params,
                state.model_state,
                key,
                *p.train,
                transform=_train_transform(config, p),
                epochs=cc.crt_epochs,
                batch_size=config.batch_size,
                lr=cc.crt_lr,
                execution=execution,
                tuned=(_transform_of(config), {k: hp[k] for k in ("mean", "std", "augment")}, structure(config, p)),
            )
            record["crt_epochs"] = cc.crt_epochs
        params, done = finetune.adjust_head(params, p.counts, cc)
        return params, {**record, **done}

    if config.finetune is None or not config.finetune.wise:
        return (*classifier_stages(state.params), None)
    return _wise(p, state, classifier_stages)


WISE_HALVES_SEED = 7  # folded into SPLIT_SEED: the two halves of the validation split WiSE-FT cross-fits on


def _wise(p: Prepared, state: train.TrainState, stages: Callable[[Any], tuple[Any, dict]]) -> tuple[Any, dict, Any]:
    """WiSE-FT with an honest validation figure. The saved model interpolates at the alpha best on the whole
    validation split (the most data for the choice), but that split cannot also score the choice: a best-of-11
    on the same images favours WiSE in a search. So the validation summary returned is cross-fitted: the split is
    halved (stratified, keyed by ``SPLIT_SEED`` alone, the same halves for every run), each half is predicted by
    the model whose alpha the *other* half chose (the later stages ``stages`` applied to it too), and the two
    confusions are summed: every validation image is scored once, by a choice it took no part in."""
    n = len(p.classes)
    x, y = p.val
    seen: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}  # id(params) -> (params, preds, nll)

    def summary(params: Any, idx: torch.Tensor) -> dict[str, Any]:
        """The figures of ``params`` on the validation images ``idx``: every model predicts the whole split once
        and each subset (the whole, a half) is scored from those predictions."""
        if id(params) not in seen:
            t = aug.make_transform(None, p.mean, p.std)
            logits = train.predict(p.model, params, state.model_state, x, batch_size=1000, transform=t).float()
            nll = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            seen[id(params)] = (params, logits.argmax(-1), nll)  # params kept: its id stays unique
        _, preds, nll = seen[id(params)]
        return metrics.summarize(metrics.confusion_matrix(y[idx], preds[idx], n), loss_sum=float(nll[idx].sum()))

    every = torch.arange(len(y), device=y.device)
    choose = lambda idx: finetune.wise_select(
        p.source_params, state.params, p.anchored, lambda c: summary(c, idx)["macro_f1"]
    )
    alpha, chosen, scores = choose(every)
    final, record = stages(chosen)
    record |= {"wise_alpha": alpha, "wise_val_macro_f1": {f"{a:g}": v for a, v in scores.items()}}
    k = random.fold_in(random.key(splits.SPLIT_SEED, device=y.device), WISE_HALVES_SEED)
    halves = splits.stratified_split(k, y, 0.5)
    if min(len(h) for h in halves) == 0:
        record["wise_crossfit"] = "skipped: the validation split is too small to halve (the figure is optimistic)"
        return final, record, None
    alphas = [choose(h)[0] for h in halves]
    models = {alpha: final}
    for a in set(alphas) - {alpha}:
        models[a] = stages(finetune.interpolate(p.source_params, state.params, a, p.anchored))[0]
    parts = [summary(models[alphas[1 - i]], h) for i, h in enumerate(halves)]
    confusion = sum(torch.tensor(s["confusion"]) for s in parts)
    honest = metrics.summarize(confusion, loss_sum=sum(s["loss"] * s["count"] for s in parts))
    record["wise_crossfit"] = {"alphas": alphas, "macro_f1": honest["macro_f1"]}
    return final, record, honest


# ---------------------------------------------------------------------------------------------- stages of run


class _Setup(NamedTuple):
    p: Prepared
    state: train.TrainState
    start: int  # the first epoch to train (> 0 when resumed)
    history: list[dict[str, Any]]  # the epochs' records so far
    meta: dict[str, Any]  # the checkpoint's metadata (model, classes, normalisation)
    device: torch.device


def _setup(
    config: RunConfig, device: torch.device, out: Path, resume: bool, data: DataSettings | None, teacher: Path | None
) -> _Setup:
    """Prepare on ``device`` (``teacher``: the self-training teacher's run folder), build the initial state there
    and, when resuming, fill it from the checkpoint."""
    p = prepare(config, data, device=device, teacher=teacher)
    state = train.init_state(p.model, p.optimizer, p.keys.train, params=p.params, model_state=p.model_state)
    meta = {
        "model": p.model.name,
        "model_config": to_dict(p.model.config),
        "classes": list(p.classes),
        "mean": p.mean,
        "std": p.std,
    }
    start, history = 0, []
    if resume:
        state, start, history, saved = runs.resume(out, state)  # onto the template's device: this run's
        meta["compile_seconds"] = saved.get("compile_seconds", 0.0)
        meta["candidate"] = saved.get("candidate")  # the compile candidate it started with: kept (keep_candidate)
    return _Setup(p, state, start, history, meta, device)


def _build_step(config: RunConfig, execution: Execution, s: _Setup) -> tuple[ex.Step, dict[str, Any], float]:
    """The step, the record of how it was built, and the seconds that took (autotune: compiles and timings)."""
    if s.start >= config.epochs:  # every epoch already trained: the run only finishes
        return make_step(config, s.p, execution), {"compile": None, "memory_format": None}, 0.0
    first = make_batches(config, s.p, s.p.keys.data)(s.start)[0]
    t0 = time.perf_counter()
    step, record = ex.tuned_step(
        execution, s.p.model, tuned(config, s.p), s.state, first, tag=_autotune_tag(config, s.p)
    )
    return step, record, time.perf_counter() - t0 if execution.compile else 0.0


def _train(
    config: RunConfig,
    execution: Execution,
    s: _Setup,
    step: ex.Step,
    callbacks: Sequence[train.Callback],
    out: Path,
    validate_every: int | Callable[[int], bool] = 1,
) -> tuple[train.TrainState, list[dict[str, Any]], dict[str, Any] | None]:
    """The fit loop from ``s.start``, validating every ``validate_every`` epochs (or those epochs, 1-based, where
    ``validate_every(epoch)`` is True) and after the last. Returns the
    final state, every epoch's record, and the full validation summary of the final state when the last epoch
    measured it (None otherwise: nothing was trained here)."""
    p, num_classes = s.p, len(s.p.classes)
    last: dict[str, Any] = {}
    epoch = iter(range(s.start + 1, config.epochs + 1))  # fit calls validate once per epoch, in order

    def validate(st: train.TrainState) -> dict[str, Any]:
        e = next(epoch)
        due = validate_every(e) if callable(validate_every) else e % validate_every == 0
        if not due and e != config.epochs:
            return {}
        v = evaluate(p.model, st.params, st.model_state, *p.val, num_classes, mean=p.mean, std=p.std)
        last.update(state=st, summary=v)
        return {
            "val_loss": v["loss"],
            "val_accuracy": v["accuracy"],
            "val_macro_f1": v["macro_f1"],
            "val_balanced_accuracy": v["balanced_accuracy"],
        }

    saver = runs.Checkpointer(out / runs.CHECKPOINT, s.meta, s.history)
    state, _ = train.fit(
        s.state,
        step,
        make_batches(config, p, p.keys.data),
        epochs=config.epochs,
        evaluate=validate,
        callbacks=[*callbacks, saver],
        start_epoch=s.start,
        sync_every=execution.sync_every,
    )
    return state, saver.history, last["summary"] if last.get("state") is state else None


def _finish(
    config: RunConfig,
    execution: Execution,
    s: _Setup,
    state: train.TrainState,
    history: list[dict[str, Any]],
    val: dict[str, Any] | None,
    built: dict[str, Any],
    out: Path,
    draw: Draw | None,
    test_split: bool = True,
) -> dict[str, Any]:
    """Post-training (which may change the parameters: only then is validation measured again), the test
    evaluation (skipped when ``test_split`` is False: ``"test"`` is None and no test image or label is read), the
    temperature fitted on the validation split (``calibration.json``), the figures, ``metrics.json`` and the final
    checkpoint."""
    p = s.p
    params, post, honest_val = post_train(config, execution, p, state, random.fold_in(p.keys.data, -1))
    if params is not state.params:
        state, val = state._replace(params=params), honest_val
    evaluate_on = lambda xy: evaluate(
        p.model, state.params, state.model_state, *xy, len(p.classes), mean=p.mean, std=p.std
    )
    val = val if val is not None else evaluate_on(p.val)
    test = evaluate_on(p.test) if test_split else None
    val_logits = calibrate.logits_of(p.model, state.params, state.model_state, p.val[0], mean=p.mean, std=p.std)
    calibration = calibrate.fit_logits(val_logits, p.val[1])
    result = {
        "config": to_dict(config),
        "model": s.meta["model"],
        "model_config": s.meta["model_config"],
        "classes": list(p.classes),
        "num_params": tree.num_params(state.params),
        "epochs": history,
        "val": val,
        "test": test,
        "timing": runs.timing(history, s.meta["compile_seconds"], p.steps_per_epoch),
        "execution": runs.execution_record(execution, s.device, s.start, built),
        "reinitialised": p.reinitialised,
        "post_training": post,
        "train_class_counts": p.counts.tolist(),
        **({"data_digest": p.data_digest} if p.data_digest else {}),
        **({"self_training": p.self_training} if p.self_training else {}),
        "calibration": {"temperature": calibration.temperature, **calibration.figures},
    }
    if draw is not None and test is not None:
        draw(out, _figures(p, state, test))
    runs.write_calibration(out, calibration)  # before the checkpoint is marked complete
    runs.finish(out, result, state, s.meta, config.epochs)
    return result


def run(
    config: RunConfig,
    out_dir: str | Path,
    *,
    execution: Execution | None = None,
    resume: bool = False,
    callbacks: Sequence[train.Callback] = (),
    data: DataSettings | None = None,
    draw: Draw | None = None,
    write_figures: bool = True,
    test_split: bool = True,
    validate_every: int | Callable[[int], bool] = 1,
    teacher_callbacks: Sequence[train.Callback] = (),
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` under ``execution`` (default ``Execution()``: the first CUDA GPU when
    usable, else the CPU; the step compiled and autotuned) and return the contents of ``metrics.json``.

    With ``resume=True`` an interrupted run continues from its last checkpoint (end of the last finished epoch),
    on any device, and reaches the same result as an uninterrupted one: batches and step keys are functions of
    (seed, epoch, step), never of process history or device. Raises ``train.NonFiniteLoss`` if the loss turns
    NaN (the last good checkpoint stays), ``RunError`` for a folder that cannot be used and ``ValueError`` for a
    device this machine lacks. ``draw(out, RunFigures)`` (the CLI passes ``hwr.report.draw_run``) receives what
    to draw; the library itself draws nothing. ``write_figures=False`` skips it. ``test_split=False`` (every study
    trial and re-run) never evaluates on the test split: metrics.json's ``"test"`` is None. ``validate_every=K``
    validates every K epochs and after the last (the study's re-runs and contenders read only the final
    figures and pass ``config.epochs``; validation never changes what trains); a predicate ``epoch -> bool``
    (1-based) picks the epochs instead (a trial: those its pruner reads, ``hwr.tune.spec.pruner_epochs``). ``data`` says where data sets live
    and whether they may be downloaded (default ``DataSettings()``; the CLI passes ``$HWR_DATA`` / ``$HWR_OFFLINE``).
    With ``config.self_train`` on, the teacher (the same config without it) trains first into ``out_dir/teacher``,
    validated as ``validate_every`` says and watched by ``teacher_callbacks``, and the run's own epochs follow it:
    a predicate ``validate_every`` reads them as epochs ``E + 1 .. 2E`` (a study's pruner sees one learning curve,
    teacher then student: ``hwr.tune.study._Pruning``).
    """
    if not callable(validate_every) and validate_every < 1:
        raise ValueError(f"validate_every must be >= 1 epoch, got {validate_every}")
    out = Path(out_dir)
    with runs.locked(out):  # one process per run folder
        execution, device, done = runs.start(out, config, RunConfig, resume, execution)
        if done is not None:
            return done
        teacher = _teacher(config, out, execution, resume, data, (teacher_callbacks, validate_every))
        if teacher is not None and callable(validate_every):  # the student's epochs follow the teacher's
            validate_every = functools.partial(_after, validate_every, config.epochs)
        s = _setup(config, device, out, resume, data, teacher)
        execution = ex.keep_candidate(execution, s.meta.get("candidate"), device)
        for cb in callbacks if s.start < config.epochs else ():
            cb.on_build(bool(execution.compile))
        step, built, compile_seconds = _build_step(config, execution, s)
        s.meta["candidate"] = built.get("candidate") or s.meta.get("candidate")
        s.meta["compile_seconds"] = s.meta.get("compile_seconds", 0.0) + compile_seconds
        state, history, val = _train(config, execution, s, step, callbacks, out, validate_every)
        draw = draw if write_figures else None
        return _finish(config, execution, s, state, history, val, built, out, draw, test_split)


def _after(due: Callable[[int], bool], offset: int, epoch: int) -> bool:
    return due(offset + epoch)


def _teacher(
    config: RunConfig, out: Path, execution: Execution, resume: bool, data: DataSettings | None, watch: tuple
) -> Path | None:
    """With self-training on, the teacher (the same config without it) trained into ``out/teacher``, or continued
    there where an earlier start of this run left it; None when it is off. ``watch``: its ``(callbacks,
    validate_every)``."""
    if not config.self_train.on:
        return None
    selftrain.check_unlabeled(sources.load(config.dataset, data or DataSettings(), require_train=False))
    folder = out / selftrain.TEACHER
    again = resume or (folder / runs.CONFIG).is_file()  # a start of this same run got that far: continue it
    run(
        selftrain.teacher_config(config),
        folder,
        execution=execution,
        resume=again,
        data=data,
        write_figures=False,
        test_split=False,
        callbacks=watch[0],
        validate_every=watch[1],
    )
    return folder


class RunFigures(NamedTuple):
    """What a finished run has to show: the test confusion matrix ``(C, C)`` with its class names, and up to 40
    misclassified test images uint8 ``(K, C, H, W)`` with ``true->predicted`` titles."""

    confusion: torch.Tensor
    classes: tuple[str, ...]
    errors: torch.Tensor
    titles: list[str]


Draw = Callable[[Path, RunFigures], None]


def _figures(p: Prepared, state: train.TrainState, test: dict[str, Any]) -> RunFigures:
    x, y = p.test
    logits = train.predict(
        p.model, state.params, state.model_state, x, transform=aug.make_transform(None, p.mean, p.std)
    )
    pred = logits.argmax(-1)
    wrong = (pred != y).nonzero().flatten()[:40]
    titles = [f"{p.classes[t]}->{p.classes[q]}" for t, q in zip(y[wrong].tolist(), pred[wrong].tolist())]
    return RunFigures(torch.tensor(test["confusion"]), tuple(p.classes), x[wrong].cpu(), titles)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Model, Any, Any, dict[str, Any]]:
    """``(model, params, model_state, metadata)`` of a trained digit run folder on ``device`` (``hwr.runs.load_run``)."""
    return runs.load_run(run_dir, device)


def unknown_classes(run_dir: str | Path, dataset: str, *, data: DataSettings | None = None) -> tuple[str, ...]:
    """The classes of ``dataset`` that the trained run ``run_dir`` does not predict, matched by name (empty:
    ``evaluate_run`` can score the run on it as it is). A study's zero-shot row needs this: a source pretrained on
    digits cannot read a user's folder of letters without a fine-tune."""
    known = set(checkpoint.read_metadata(Path(run_dir) / runs.CHECKPOINT)["classes"])
    ds = sources.load(dataset, data or DataSettings(), require_train=False)
    return tuple(c for c in ds.classes if c not in known)


def _scored_split(
    run_dir: str | Path, dataset: str, split: str, data: DataSettings | None, device: Any, limit: int = 0
) -> tuple:
    """``(model, params, state, meta, images, labels, classes)``: a run and ``dataset``'s ``split`` on its classes
    (``evaluate_run`` says how they are matched and what is refused)."""
    from hwr.data import folders  # the user's own images (kept here: the scoring of runs is the only user)

    device = runtime.resolve_device(device)
    model, params, state, meta = load_run(run_dir, device)
    ds = sources.load(dataset, data or DataSettings(), device=device, require_train=False, only_test=split == "test")
    if folders.is_user_data(dataset) or set(ds.classes) <= set(meta["classes"]):  # by name: a subset scores
        ds = folders.on_classes(ds, meta["classes"], whose=str(run_dir))
    if ds.num_classes != len(meta["classes"]):
        raise RunError(
            f"{run_dir} predicts {len(meta['classes'])} classes but {dataset} has {ds.num_classes}; "
            f"fine-tune it first: hwr finetune --from {run_dir} --dataset {dataset} --out ..."
        )
    if split == "val" and ds.val_images is None:
        raise RunError(f"dataset {dataset} has no held-out validation split")
    x, y = (
        preparation.test_subset(ds.test_images, ds.test_labels, limit)
        if split == "test"
        else (ds.val_images, ds.val_labels)
    )
    return model, params, state, meta, x, y, ds.num_classes


def evaluate_run(
    run_dir: str | Path,
    dataset: str,
    *,
    split: str = "test",
    data: DataSettings | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """A trained run evaluated as is on ``dataset``'s ``test`` or held-out ``val`` split (the zero-shot baseline of
    a fine-tuning study), on ``device``. The data set's classes are matched to the run's by name (it may hold only
    some of them; a user's ``folder:`` / ``csv:`` set no training images: ``hwr.data.folders.on_classes``), so
    where ``unknown_classes`` is empty the run can be scored. Raises ``RunError`` when a built-in set has a class
    the run lacks or the split does not exist, ``DatasetSpecError`` naming a folder's class the run does not
    know."""
    model, params, state, meta, x, y, k = _scored_split(run_dir, dataset, split, data, device)
    return evaluate(model, params, state, x, y, k, mean=meta["mean"], std=meta["std"])


def predict_run(
    run_dir: str | Path,
    dataset: str,
    *,
    split: str = "test",
    data: DataSettings | None = None,
    device: str | torch.device = "cpu",
    limit_test: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted, labels)``: the class a trained run gives every image of ``dataset``'s ``split``, and the
    truth, as int64 tensors on the CPU in the split's order (what ``evaluate_run`` counts, image by image: a
    study's evaluation resamples them, ``hwr.tune.stats.image_bootstrap``). ``limit_test``: the test images a run
    of that config was scored on. Refuses what ``evaluate_run`` does."""
    model, params, state, meta, x, y, _ = _scored_split(run_dir, dataset, split, data, device, limit_test)
    transform = aug.make_transform(None, meta["mean"], meta["std"])
    logits = train.predict(model, params, state, x, transform=transform)
    return logits.argmax(-1).cpu(), y.cpu()
