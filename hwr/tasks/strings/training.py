"""Digit strings end to end: ``run(config, out_dir)`` trains a CTC model on synthetic strings composed from MNIST
digits and writes a run folder like ``hwr.tasks.digits.training.run`` does:

    config.json               everything needed to rerun (StringsConfig, ``"task": "strings"``)
    checkpoint.safetensors    TrainState + metadata (epochs done, history, normalisation, model), every epoch
    metrics.json              per-epoch records, validation and test figures (CER, string accuracy, by length)

Training strings are drawn afresh for every step from the training digits (keyed by seed, epoch and step, so a
resumed run sees the same strings); validation and test strings are fixed sets from the held-out and the test
digits. The step and evaluation are ``hwr.tasks.strings.step``'s, the reading of real images ``hwr.tasks.strings.read``'s
(re-exported here: this module is the strings task's one entry point). Library code prints nothing; progress
comes through ``hwr.engine.train.Callback``s.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hwr import checkpoint, files, models, optim, random, tree
from hwr.config import OptimConfig, from_dict, to_dict
from hwr.data import clean, sources
from hwr.data import strings as ds
from hwr.engine import perf, runtime, train
from hwr.engine.execution import Execution
from hwr.errors import InputError
from hwr.models import Model
from hwr.models.crnn import CRNNConfig
from hwr.tasks.digits.finetune import transfer
from hwr.tasks.digits.training import CHECKPOINT, CONFIG, METRICS, RunError, build_optimizer
from hwr.tasks.strings.read import MAX_WIDTH, normalise_string, predict
from hwr.tasks.strings.step import StringBatch, StringBatches, eval_step, evaluate, train_step

__all__ = [
    "MAX_WIDTH",
    "TASK",
    "Prepared",
    "StringBatch",
    "StringBatches",
    "StringsConfig",
    "StringsFigures",
    "eval_step",
    "evaluate",
    "is_strings_run",
    "load_run",
    "make_step",
    "memory_format",
    "normalise_string",
    "predict",
    "prepare",
    "read_config",
    "read_source",
    "run",
    "train_step",
]

TASK = "strings"
_EXECUTION_KEYS = ("compile", "precision", "memory_format")


@dataclass(frozen=True)
class StringsConfig:
    """One strings training run. ``steps`` batches of fresh strings make an epoch; ``source`` is a trained
    digit run folder whose matching parameters (the conv stem, by name and shape) initialise the model."""

    model: str = "crnn"
    model_config: Any = None  # CRNNConfig; None: its defaults
    data: ds.StringSpec = field(default_factory=ds.StringSpec)
    dataset: str = "mnist"
    epochs: int = 10
    steps: int = 400
    batch_size: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig("adam", 3e-3, "onecycle", warmup=0.15))
    val_strings: int = 2000
    test_strings: int = 8000
    seed: int = 0
    source: str = ""
    recipe: str = ""
    task: str = TASK

    def __post_init__(self) -> None:
        if self.task != TASK:
            raise InputError(f"a StringsConfig has task {TASK!r}, got {self.task!r}")
        if self.model != "crnn":
            raise InputError(
                f"strings are read by the crnn family (per-column CTC scores), not {self.model!r}; use --model crnn"
            )
        if isinstance(self.model_config, dict):
            object.__setattr__(self, "model_config", models.config_from_dict(self.model, self.model_config))
        if self.model_config is not None and not isinstance(self.model_config, CRNNConfig):
            raise InputError(f"model_config must be a CRNNConfig, got {type(self.model_config).__name__}")
        if self.dataset not in ("mnist", "emnist-digits", "qmnist"):
            raise InputError(
                f"strings are composed from a digit data set (mnist, emnist-digits, qmnist), got {self.dataset!r}"
            )
        for name in ("epochs", "steps", "batch_size", "val_strings", "test_strings"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def crnn(self) -> CRNNConfig:
        """The model config, with the strings' height."""
        base = self.model_config or CRNNConfig()
        return dataclasses.replace(base, height=self.data.height) if base.height != self.data.height else base


# ---------------------------------------------------------------------------------------------- run folders


class StringsFigures(NamedTuple):
    """What a finished strings run hands its ``draw`` callback: the trained model and the test strings it was
    scored on (so the caller draws readings without loading or rendering anything again)."""

    model: Model
    params: Any
    model_state: Any
    test: ds.Strings
    mean: float
    std: float


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


def read_source(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(params, model_state)`` flat tensors of a trained run folder (digits or strings), checked."""
    src = Path(source)
    if not (src / CONFIG).is_file():
        raise RunError(f"--from {src}: not a run folder (no {CONFIG}); pass the --out folder of a trained run")
    flat, _ = checkpoint.load_flat(src / CHECKPOINT)
    params = {k[7:]: v for k, v in flat.items() if k.startswith("params.")}
    state = {k[12:]: v for k, v in flat.items() if k.startswith("model_state.")}
    return params, state


def _stem(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in flat.items() if k.startswith("block")}


def prepare(
    config: StringsConfig,
    *,
    data_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    network: bool = True,
) -> Prepared:
    """Digit pools from the fixed splits, the fixed validation and test strings, the model (its conv stem, the
    ``block*`` parameters and statistics, from ``config.source`` when given) and the optimizer. Bad input raises here, before anything compiles."""
    d = sources.load(config.dataset, data_root, device=device, network=network)
    if d.num_classes != 10:
        raise RunError(f"{config.dataset} has {d.num_classes} classes; strings are made of the 10 digits")
    pools = ds.pools(d.train_images, d.train_labels, d.test_images, d.test_labels)
    mean, std = clean.normalization_stats(pools["train"].images)
    val = ds.fixed_set(pools["val"], config.val_strings, config.data, seed=ds.TEST_SEED + 1)
    test = ds.fixed_set(pools["test"], config.test_strings, config.data)

    cfg = config.crnn
    model = models.get(config.model, cfg)
    k_model = random.split(random.key(config.seed))[0]
    params = model.init(random.fold_in(k_model, 0).to(device))
    model_state = tree.map(lambda t: t.to(device), model.init_state())
    kept: list[str] = []
    if config.source:  # the conv stem only: blocks of the same names and shapes (a digit CNN's)
        src_params, src_state = (_stem(t) for t in read_source(config.source))
        params, fresh = transfer(src_params, params)
        model_state, _ = transfer(src_state, model_state)
        kept = sorted(set(tree.flatten_names(params)) - set(fresh))
        if not kept:
            raise RunError(
                f"--from {config.source}: none of its parameters fits the crnn's conv stem (by name and "
                "shape); start from a digit CNN whose first blocks have the crnn's channels (e.g. a run "
                "of hwr train --recipe fast)"
            )
    optimizer = build_optimizer(config.optim, config.steps * config.epochs)
    return Prepared(config, model, optimizer, params, model_state, pools, val, test, mean, std, kept)


def is_strings_run(run_dir: str | Path) -> bool:
    """True if ``run_dir/config.json`` names the strings task (False for digit runs and for non-run folders)."""
    try:
        return json.loads((Path(run_dir) / CONFIG).read_text()).get("task") == TASK
    except (OSError, ValueError, AttributeError):
        return False


def read_config(run_dir: str | Path) -> StringsConfig:
    """The ``StringsConfig`` of a strings run folder, with clear errors for anything else."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG}); pass the --out folder of hwr train")
    if not is_strings_run(run_dir):
        raise RunError(
            f"{run_dir} holds a digit classifier, not a strings model; train one with "
            f"hwr train --recipe strings --out DIR"
        )
    try:
        values = json.loads(path.read_text())
        for key in _EXECUTION_KEYS:  # how a run executed is not part of it (early strings configs held these)
            values.pop(key, None)
        return from_dict(StringsConfig, values)
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise RunError(f"{path} is not a valid strings config: {e}") from None


class _Checkpointer(train.Callback):
    """Saves the state and history atomically at the end of every epoch (the last good checkpoint)."""

    def __init__(self, path: Path, meta: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.path, self.meta, self.history = path, meta, list(history)

    def on_epoch_end(self, epoch: int, state: train.TrainState, record: dict[str, Any]) -> None:
        self.history.append(record)
        checkpoint.save(self.path, state, {**self.meta, "epochs_done": epoch + 1, "history": self.history})


def memory_format(execution: Execution) -> str:
    """The strings step's layout under ``execution``: ``auto`` is channels-last when compiled (506 vs 478
    samples/s at 2 threads on the CPU), contiguous when eager; a forced format is kept."""
    if execution.memory_format != "auto":
        return execution.memory_format
    return "channels_last" if execution.compile else "contiguous"


def make_step(p: Prepared, execution: Execution | None = None) -> Callable[[train.TrainState, StringBatch], Any]:
    """The pure, uncompiled train step ``run`` compiles for ``p`` under ``execution``: ``bf16`` runs the model
    under autocast (float32 logits, so the CTC recursion stays in float32), ``channels_last`` lays the
    convolutions out NHWC (``hwr.engine.perf.channels_last``: the same function up to float rounding)."""
    execution = execution or Execution()
    step_model = perf.autocast(p.model, "bfloat16") if execution.precision == "bf16" else p.model
    if memory_format(execution) == "channels_last":
        step_model = perf.channels_last(step_model)
    return train_step(step_model, p.optimizer, mean=p.mean, std=p.std)


def run(
    config: StringsConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[train.Callback] = (),
    data_root: str | Path | None = None,
    execution: Execution | None = None,
    network: bool = True,
    draw: Callable[[Path, StringsFigures], Any] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` under ``execution`` (default ``Execution()``: the first CUDA GPU when
    usable, else the CPU, the step compiled) and return the contents of ``metrics.json``, as
    ``hwr.tasks.digits.training.run``: ``resume=True`` continues from the last finished epoch to the same result, on any
    device; ``train.NonFiniteLoss`` keeps the last good checkpoint; ``RunError`` for a folder that cannot be used,
    ``ValueError`` for a device this machine lacks. How it executed is recorded under ``"execution"``;
    ``draw(out, StringsFigures)`` receives what to draw once the test strings are scored."""
    execution = execution or Execution()
    device = execution.resolve()
    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    if resume:
        if not ckpt.is_file():
            raise RunError(f"nothing to resume in {out}: no {CHECKPOINT}; start it without --resume")
        if to_dict(read_config(out)) != to_dict(config):
            raise RunError(f"--resume of {out} with a different config; resume with the saved one (omit options)")
    elif ckpt.exists() or (out / METRICS).exists():
        raise RunError(f"run folder {out} already holds a run; pass --resume to continue it or choose another --out")
    execution.configure(device)
    p = prepare(config, data_root=data_root, device=device, network=network)
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / CONFIG, to_dict(config))

    k_train, k_data = random.split(random.split(random.key(config.seed))[1])
    state = train.init_state(p.model, p.optimizer, k_train.to(device), params=p.params, model_state=p.model_state)
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        state = checkpoint.load(ckpt, state)
        meta = checkpoint.read_metadata(ckpt)
        if meta.get("task") != TASK:
            raise RunError(f"{ckpt} is not a strings checkpoint; it was written by another command")
        start, history = int(meta.get("epochs_done", 0)), list(meta.get("history", []))
        if meta.get("complete"):
            return json.loads((out / METRICS).read_text())

    step = make_step(p, execution)
    batches_of = lambda epoch: StringBatches(
        random.fold_in(k_data, epoch), p.pools["train"], config.data, config.batch_size, config.steps
    )
    compile_seconds = 0.0
    if execution.compile:
        step = train.compile(step)
        t0 = time.perf_counter()
        step(state, batches_of(start)[0])  # warm-up compile; the step is pure, so the result is dropped
        runtime.synchronize(device)
        compile_seconds = time.perf_counter() - t0

    def validate(st: train.TrainState) -> dict[str, Any]:
        s = evaluate(p.model, st.params, st.model_state, p.val, mean=p.mean, std=p.std)
        return {"val_loss": s["loss"], "val_cer": s["cer"], "val_accuracy": s["string_accuracy"]}

    meta = {
        "task": TASK,
        "model": p.model.name,
        "model_config": to_dict(p.model.config),
        "data": to_dict(config.data),
        "mean": p.mean,
        "std": p.std,
        "compile_seconds": compile_seconds,
    }
    saver = _Checkpointer(ckpt, meta, history)
    state, _ = train.fit(
        state,
        step,
        batches_of,
        epochs=config.epochs,
        evaluate=validate,
        callbacks=[*callbacks, saver],
        start_epoch=start,
        sync_every=execution.sync_every,
    )
    history = saver.history
    test = evaluate(p.model, state.params, state.model_state, p.test, mean=p.mean, std=p.std)
    val = evaluate(p.model, state.params, state.model_state, p.val, mean=p.mean, std=p.std)
    result = {
        "task": TASK,
        "config": to_dict(config),
        "model": p.model.name,
        "model_config": meta["model_config"],
        "num_params": tree.num_params(state.params),
        "epochs": history,
        "val": val,
        "test": test,
        "timing": {
            "compile_seconds": compile_seconds,
            "train_seconds": sum(r["train_seconds"] for r in history),
            "samples_per_s": sum(r["samples_per_s"] for r in history) / max(len(history), 1),
        },
        "transferred": p.transferred,
        "execution": {
            "device": str(device),
            "device_name": runtime.device_name(device),
            "compile": execution.compile,
            "memory_format": memory_format(execution),
            "precision": execution.precision,
            "threads": torch.get_num_threads(),
            "tf32": execution.tf32 and device.type == "cuda",
            "sync_every": execution.sync_every,
            "resumed_at_epoch": start,
            "requested": to_dict(execution),
        },
    }
    if draw is not None:  # the library draws nothing itself (the CLI passes a drawer)
        draw(out, StringsFigures(p.model, state.params, state.model_state, p.test, p.mean, p.std))
    files.write_json(out / METRICS, result)
    checkpoint.save(ckpt, state, {**meta, "epochs_done": config.epochs, "history": history, "complete": True})
    return result


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Model, Any, Any, dict[str, Any]]:
    """``(model, params, model_state, metadata)`` of a trained strings run folder; a digit run, or a checkpoint
    that is not a strings checkpoint, raises ``RunError``."""
    run_dir = Path(run_dir)
    read_config(run_dir)
    meta = checkpoint.read_metadata(run_dir / CHECKPOINT)
    if meta.get("task") != TASK:
        raise RunError(
            f"{run_dir / CHECKPOINT} is a digit classifier's checkpoint, not a strings model's; "
            f"train one with hwr train --recipe strings --out {run_dir}"
        )
    model = models.get(meta["model"], models.config_from_dict(meta["model"], meta["model_config"]))
    template = {"params": model.init(random.key(0)), "model_state": model.init_state()}
    loaded = checkpoint.load(run_dir / CHECKPOINT, template)
    to = lambda t: tree.map(lambda x: x.to(device), t)
    return model, to(loaded["params"]), to(loaded["model_state"]), meta
