"""The run folder, written once for every task: its file names, opening a run (new, resumed or refused), the
atomic per-epoch checkpointer, the record of how a run executed, the final write, and loading a trained run.

A run folder holds::

    config.json               what the run is (the task's frozen config; ``"task"`` names it, digits when absent)
    checkpoint.safetensors    the TrainState and metadata (model, normalisation, epochs done, history), every epoch
    metrics.json              per-epoch records, final validation and test figures, timing, and what executed
    calibration.json          the temperature and reject thresholds fitted on the validation split (``Calibration``)
    .lock                     held (``fcntl.flock``) by the one process training in the folder (``locked``)

Every task's ``run`` goes through the same steps here, so a resumed digit run and a resumed strings run behave
alike: a finished run returns its saved metrics before anything is prepared; a run with a different config is
refused; an interrupted one continues from its last finished epoch. Library code, so nothing is printed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import torch

from hwr import checkpoint, files, models, random, tree
from hwr.config import from_dict, to_dict
from hwr.engine import runtime, train
from hwr.engine.execution import LEGACY_EXECUTION_KEYS, Execution, from_legacy
from hwr.errors import HwrError
from hwr.models import Model
from hwr.tree import PyTree

__all__ = [
    "CALIBRATION",
    "CHECKPOINT",
    "CONFIG",
    "DIGITS",
    "METRICS",
    "Calibration",
    "Checkpointer",
    "Resumed",
    "RunError",
    "Started",
    "execution_record",
    "finish",
    "finished",
    "load_run",
    "locked",
    "open_run",
    "read_calibration",
    "read_config",
    "read_source",
    "resume",
    "saved_execution",
    "start",
    "task_of",
    "timing",
    "transfer",
    "write_calibration",
]

CONFIG, CHECKPOINT, METRICS, LOCK = "config.json", "checkpoint.safetensors", "metrics.json", ".lock"
CALIBRATION = "calibration.json"
DIGITS = "digits"  # the task of a config.json without a "task" key (every digit run)


class RunError(HwrError, ValueError):
    """A run folder that cannot be used as asked (exists without --resume, missing files, wrong kind)."""


def _values(run_dir: Path) -> dict[str, Any]:
    if run_dir.is_file():  # `hwr predict --run digit.png run/`: the arguments swapped
        raise RunError(f"{run_dir} is a file, not a run folder; pass the --out folder of hwr train (--run RUN)")
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist; train one with: hwr train --out {run_dir}")
    path = run_dir / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG}); pass the --out folder of hwr train")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON ({e}); restore it or train the run again") from None
    if not isinstance(values, dict):
        raise RunError(f"{path} holds a {type(values).__name__}, not a run config; restore it or train again")
    return values


def task_of(run_dir: str | Path) -> str:
    """The task a run folder holds (``config.json``'s ``"task"``, ``digits`` when absent); ``RunError`` for a
    folder that is not a run."""
    return str(_values(Path(run_dir)).get("task", DIGITS))


_KINDS = {DIGITS: "a digit classifier", "strings": "a strings model"}


def _task_hint(task: str, run_dir: Path) -> str:
    return "hwr train --recipe strings" if task == "strings" else "hwr train --recipe fast"


def _mismatch(run_dir: Path, found: str, task: str) -> RunError:
    kind = lambda t: _KINDS.get(t, f"a {t} model")
    return RunError(
        f"{run_dir} holds {kind(found)}, not {kind(task)}; train one with {_task_hint(task, run_dir)} --out DIR"
    )


def read_config(run_dir: str | Path, cls: type, task: str = DIGITS) -> Any:
    """The ``cls`` config of a ``task`` run folder, with clear errors for a missing folder or file, another task's
    folder or a bad file. Keys an old ``config.json`` carried about execution (``LEGACY_EXECUTION_KEYS``: where a
    run ran is not what it is) are dropped; ``saved_execution`` reads them."""
    run_dir = Path(run_dir)
    values = _values(run_dir)
    found = str(values.get("task", DIGITS))
    if found != task:
        raise _mismatch(run_dir, found, task)
    values = {k: v for k, v in values.items() if k not in LEGACY_EXECUTION_KEYS}
    try:
        return from_dict(cls, values)
    except (TypeError, ValueError) as e:
        raise RunError(f"{run_dir / CONFIG} is not a valid {task} config: {e}") from None


def saved_execution(run_dir: str | Path, base: Execution | None = None) -> Execution:
    """``base`` (default ``Execution()``) with what a run folder's ``config.json`` still says about execution: a
    folder written before ``Execution`` existed carries ``compile``, ``precision`` and ``memory_format``, so it
    resumes as it ran; a current folder says nothing and ``base`` is returned."""
    return from_legacy(_values(Path(run_dir)), base)


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the run folder ``out`` (made if missing) for one process: two runs into one folder would overwrite
    each other's checkpoint and metrics. The second is refused with the holder's pid (``RunError``). An
    ``flock`` dies with its process, so a folder left by a kill -9 is free again; the pid is only informational."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(
                f"run folder {out} is in use by another hwr process (pid {holder}); wait for it to finish "
                "or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _same_config(out: Path, config: Any, cls: type) -> bool:
    """Whether ``out``'s ``config.json`` is ``config`` (False for another task's or an unreadable one)."""
    try:
        return to_dict(read_config(out, cls, getattr(config, "task", DIGITS))) == to_dict(config)
    except HwrError:
        return False


def finished(out: Path) -> bool:
    """True when ``out`` holds a finished run: its final checkpoint marked complete and ``metrics.json`` beside it
    (``finish`` writes the metrics first, so metrics alone may be a run killed before its final checkpoint)."""
    if not ((out / METRICS).is_file() and (out / CHECKPOINT).is_file()):
        return False
    return bool(checkpoint.read_metadata(out / CHECKPOINT).get("complete"))


def open_run(out: Path, config: Any, cls: type, resume: bool) -> dict[str, Any] | None:
    """Check the folder for ``config`` (a new run, or a resume of the same config) and write ``config.json`` for
    a new run. Returns the saved metrics of a resumed run that had already finished (nothing else to do), else
    None. ``cls`` is the task's config class; the task is ``config.task`` (digits when it has none)."""
    if resume:
        if not (out / CONFIG).is_file():
            raise RunError(f"nothing to resume in {out}: no {CONFIG}; start the run without --resume")
        if to_dict(read_config(out, cls, getattr(config, "task", DIGITS))) != to_dict(config):
            raise RunError(f"--resume of {out} with a different config; resume with the saved one (omit options)")
        if not (out / CHECKPOINT).is_file():
            return None  # stopped before its first epoch ended: it starts again from config.json (``resume``)
        if finished(out):
            return json.loads((out / METRICS).read_text())
        return None  # config.json stays as written (an old one keeps its execution keys: saved_execution)
    if (out / CHECKPOINT).exists() or (out / METRICS).exists():
        raise RunError(f"run folder {out} already holds a run; pass --resume to continue it or choose another --out")
    if (out / CONFIG).is_file() and not _same_config(out, config, cls):  # stopped before its first checkpoint
        raise RunError(
            f"run folder {out} holds the config of another run (stopped before its first epoch ended); continue "
            f"it with: hwr train --out {out} --resume, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / CONFIG, to_dict(config))
    return None


class Started(NamedTuple):
    """A run about to train: how and where it executes, and the saved metrics when it had already finished."""

    execution: Execution
    device: torch.device
    done: dict[str, Any] | None


def start(out: Path, config: Any, cls: type, resume: bool, execution: Execution | None) -> Started:
    """The first steps of every task's ``run``: resolve the device (``ValueError`` for one this machine lacks),
    open the folder (``open_run``) and, unless the run had finished, apply the execution's process settings."""
    execution = execution or Execution()
    device = execution.resolve()
    done = open_run(out, config, cls, resume)
    if done is None:
        execution.configure(device)
    return Started(execution, device, done)


class Resumed(NamedTuple):
    """Where a run starts: its state, the first epoch to train, the records so far and the saved metadata."""

    state: train.TrainState
    start: int
    history: list[dict[str, Any]]
    meta: dict[str, Any]


def resume(out: Path, state: train.TrainState, task: str = DIGITS) -> Resumed:
    """``state`` filled from ``out``'s checkpoint (onto ``state``'s devices), with the epochs done and history;
    a run stopped before its first checkpoint resumes from epoch 0 with ``state`` as given."""
    if not (out / CHECKPOINT).is_file():
        return Resumed(state, 0, [], {})
    meta = checkpoint.read_metadata(out / CHECKPOINT)
    if meta.get("task", DIGITS) != task:
        raise RunError(f"{out / CHECKPOINT} is not a {task} checkpoint; it was written by another command")
    state = checkpoint.load(out / CHECKPOINT, state)
    return Resumed(state, int(meta.get("epochs_done", 0)), list(meta.get("history", [])), meta)


class Checkpointer(train.Callback):
    """Saves the state and history atomically at the end of every epoch (the last good checkpoint)."""

    def __init__(self, path: Path, meta: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.path, self.meta, self.history = path, meta, list(history)

    def on_epoch_end(self, epoch: int, state: train.TrainState, record: dict[str, Any]) -> None:
        self.history.append(record)
        checkpoint.save(self.path, state, {**self.meta, "epochs_done": epoch + 1, "history": self.history})


def execution_record(execution: Execution, device: torch.device, start: int, built: dict[str, Any]) -> dict[str, Any]:
    """What executed, for ``metrics.json``: the device and its name, threads, precision, TF32, the fit loop's sync
    interval, the epoch a resume began at, the ``Execution`` asked for, and how the step was built (``built``:
    ``hwr.engine.execution.train_step``'s record, the compile candidate among it)."""
    return {
        "device": str(device),
        "device_name": runtime.device_name(device),
        "threads": torch.get_num_threads(),
        "precision": execution.precision,
        "tf32": execution.tf32 and device.type == "cuda",
        "sync_every": execution.sync_every,
        "resumed_at_epoch": start,
        "requested": to_dict(execution),
        **built,
    }


def timing(history: list[dict[str, Any]], compile_seconds: float, steps_per_epoch: int) -> dict[str, float]:
    """The run's timing summary from its epoch records."""
    train_seconds = sum(r["train_seconds"] for r in history)
    return {
        "compile_seconds": compile_seconds,
        "train_seconds": train_seconds,
        "samples_per_s": sum(r["samples_per_s"] for r in history) / max(len(history), 1),
        "seconds_per_step": train_seconds / max(len(history) * steps_per_epoch, 1),
    }


def finish(out: Path, result: dict[str, Any], state: train.TrainState, meta: dict[str, Any], epochs: int) -> None:
    """Write ``metrics.json``, then the final checkpoint marked complete (a crash between the two resumes and
    writes the metrics again; a complete checkpoint always has its metrics beside it)."""
    files.write_json(out / METRICS, result)
    history = result["epochs"]
    checkpoint.save(out / CHECKPOINT, state, {**meta, "epochs_done": epochs, "history": history, "complete": True})


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", task: str = DIGITS
) -> tuple[Model, Any, Any, dict[str, Any]]:
    """``(model, params, model_state, metadata)`` of a trained ``task`` run folder on ``device`` (``auto``
    resolves; any device, whichever the run trained on), checked against its architecture."""
    run_dir = Path(run_dir)
    task_found = task_of(run_dir)
    device = runtime.resolve_device(device)
    meta = checkpoint.read_metadata(run_dir / CHECKPOINT)
    if task_found != task or meta.get("task", DIGITS) != task:
        raise _mismatch(run_dir, meta.get("task", DIGITS) if task_found == task else task_found, task)
    if "model" not in meta:
        raise RunError(f"{run_dir / CHECKPOINT} has no model description; it was not written by hwr train")
    model = models.get(meta["model"], models.config_from_dict(meta["model"], meta["model_config"]))
    shapes = random.key(0, device="meta")  # a template of shapes only: nothing is computed or allocated
    template = {"params": model.init(shapes), "model_state": model.init_state(device="meta")}
    loaded = checkpoint.load(run_dir / CHECKPOINT, template, device=device)
    return model, loaded["params"], loaded["model_state"], meta


def read_source(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(params, model_state)`` as flat ``{dotted name: tensor}`` dicts (on the CPU) of a trained run folder of
    any task: what a fine-tune or a strings model starts from."""
    src = Path(run_dir)
    if not (src / CONFIG).is_file():
        raise RunError(f"--from {src}: not a run folder (no {CONFIG}); pass the --out folder of a trained run")
    params, _ = checkpoint.load_flat(src / CHECKPOINT, prefix="params.")
    state, _ = checkpoint.load_flat(src / CHECKPOINT, prefix="model_state.")
    return params, state


def transfer(
    pretrained: dict[str, torch.Tensor],
    fresh: PyTree,
    *,
    reinit: tuple[str, ...] = (),
    keep: Callable[[str], bool] = lambda _: True,
    strict: bool = True,
) -> tuple[PyTree, list[str]]:
    """``fresh`` with every leaf replaced by the pretrained tensor of the same dotted name and shape (on the
    leaf's device and dtype), except under the top-level keys in ``reinit`` and names ``keep`` refuses. Returns
    ``(params, names kept fresh)``. ``pretrained`` is flat (``read_source``). Pure: new tensors.

    ``strict`` (the default): any other leaf the source lacks or holds in another shape is a ``RunError`` naming
    it, never a silent fresh initialisation; a partial transfer (a conv stem into another family) says
    ``strict=False``."""
    flat = tree.flatten_names(fresh)
    out, kept_fresh, mismatched = {}, [], []
    for name, leaf in flat.items():
        src = pretrained.get(name)
        wanted = name.split(".")[0] not in reinit and keep(name)
        if src is not None and src.shape == leaf.shape and wanted:
            out[name] = src.to(device=leaf.device, dtype=leaf.dtype).clone()
            continue
        out[name] = leaf
        kept_fresh.append(name)
        if wanted:
            mismatched.append(
                f"{name} ({'absent' if src is None else f'{tuple(src.shape)} in the source'}, {tuple(leaf.shape)} here)"
            )
    if strict and mismatched:
        groups = sorted({m.split(".")[0] for m in mismatched})
        raise RunError(
            f"the source does not fit the model here: {'; '.join(mismatched[:4])}"
            f"{' ...' if len(mismatched) > 4 else ''}; initialise those afresh on purpose with reinit={tuple(groups)} "
            "(hwr finetune --reinit ...), or fine-tune with the source's own architecture"
        )
    return tree.unflatten_names(out), kept_fresh


class Calibration(NamedTuple):
    """A run's ``calibration.json``: what ``hwr predict``, ``hwr evaluate`` and a web page need to say how sure a
    reading is and to reject the doubtful ones. ``temperature``: divide the logits by it before the softmax (1.0:
    none fitted, e.g. a strings run, ``note`` says why); ``confidence``: what a threshold compares against (digits:
    ``max_softmax``, the calibrated top probability; strings: the string score ``hwr.tasks.strings`` names);
    ``thresholds``: target error -> the figures of the threshold chosen for it on ``fitted_on`` (``threshold``,
    ``coverage``, ``error``, ``accepted``; accept ``confidence >= threshold``); ``n``: readings fitted on;
    ``figures``: the fit's before / after figures (``nll_before``, ``nll_after``, ``ece_before``, ``ece_after``)."""

    temperature: float = 1.0
    confidence: str = "max_softmax"
    thresholds: Mapping[float, Mapping[str, float]] = MappingProxyType({})
    fitted_on: str = "val"
    n: int = 0
    figures: Mapping[str, float] = MappingProxyType({})
    note: str = ""

    def threshold(self, target_error: float) -> float | None:
        """The reject threshold stored for ``target_error`` (None when none was fitted for it)."""
        found = self.thresholds.get(float(target_error))
        return None if found is None else float(found["threshold"])


def _target_key(target: float) -> str:
    return repr(float(target))  # exact: 0.01 -> "0.01", and any float reads back as itself


def write_calibration(run_dir: str | Path, calibration: Calibration) -> Path:
    """Write ``calibration`` as the run folder's ``calibration.json`` (atomically)."""
    c = calibration
    body = {
        "temperature": c.temperature,
        "confidence": c.confidence,
        "fitted_on": c.fitted_on,
        "n": c.n,
        **dict(c.figures),
        "thresholds": {_target_key(k): dict(v) for k, v in sorted(c.thresholds.items(), reverse=True)},
        **({"note": c.note} if c.note else {}),
    }
    return files.write_json(Path(run_dir) / CALIBRATION, body)


def _number(x: Any) -> float | int:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"{x!r} is not a number")
    return x


def read_calibration(run_dir: str | Path) -> Calibration | None:
    """The run folder's ``calibration.json`` as a ``Calibration``, or None when the run has none (trained before
    calibration existed: ``hwr calibrate RUN`` fits it). A file that does not hold a valid one is a ``RunError``."""
    path = Path(run_dir) / CALIBRATION
    if not path.is_file():
        return None
    fix = f"fit it again: hwr calibrate {run_dir}"
    try:
        values = json.loads(path.read_text())
        temperature = float(values["temperature"])
        thresholds = {float(k): {n: _number(x) for n, x in v.items()} for k, v in values.get("thresholds", {}).items()}
        if not (math.isfinite(temperature) and temperature > 0) or any(
            not 0 <= v["threshold"] <= 1 or not 0 < k < 1 for k, v in thresholds.items()
        ):
            raise ValueError("a temperature <= 0, a threshold outside [0, 1] or a target outside (0, 1)")
        known = {"temperature", "confidence", "fitted_on", "n", "thresholds", "note"}
        figures = {k: _number(v) for k, v in values.items() if k not in known}
        return Calibration(
            temperature,
            str(values.get("confidence", "max_softmax")),
            thresholds,
            str(values.get("fitted_on", "val")),
            int(values.get("n", 0)),
            figures,
            str(values.get("note", "")),
        )
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} does not hold a valid calibration ({e}); {fix}") from None
