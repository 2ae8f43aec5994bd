"""What people look at: ``rich`` tables and PNG figures (image grids, confusion matrices). Figures are written
atomically with matplotlib's Agg backend, so no display is needed."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from hwr.files import atomic_write

__all__ = ["console", "err_console", "metrics_table", "save_confusion", "save_figure", "save_image_grid", "save_image_rows"]

# Piped into a log (`make run > log`), rich would squeeze tables into 80 columns (`COMP…`): off a terminal, lay
# them out at their natural width instead (tables do not stretch to the console's width).
_WIDE = 240
console = Console(stderr=False, width=None if sys.stdout.isatty() else _WIDE)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDE)  # visible when stdout is piped


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Atomically save a matplotlib figure as PNG and close it."""
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _to_numpy_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 4:
        x = x[:, 0]  # (N, H, W): first channel
    if x.ndim != 3:
        raise ValueError(f"expected images (N, 1, H, W) or (N, H, W), got shape {x.shape}")
    return x


def save_image_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    title: str | None = None,
    cmap: str = "gray",
) -> Path:
    """A grid of greyscale images ``(N, 1, H, W)`` (uint8 or float), optionally captioned one by one."""
    x = _to_numpy_images(images)
    n = max(len(x), 1)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.35 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(x):
            ax.imshow(x[i], cmap=cmap, vmin=0, vmax=255 if x.dtype == np.uint8 else None)
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_image_rows(
    rows: Sequence[tuple[str, torch.Tensor | np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Labelled rows of images of equal count, e.g. ``[("MNIST", a), ("optdigits", b)]`` or originals beside
    their augmentations, so two sets can be compared by eye."""
    arrays = [(name, _to_numpy_images(x)) for name, x in rows]
    ncols = max(len(x) for _, x in arrays)
    fig, axes = plt.subplots(len(arrays), ncols, figsize=(1.1 * ncols, 1.2 * len(arrays)), squeeze=False)
    for r, (name, x) in enumerate(arrays):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(x):
                ax.imshow(x[c], cmap="gray", vmin=0, vmax=255 if x.dtype == np.uint8 else None)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_confusion(
    confusion: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    title: str = "confusion (rows: true, columns: predicted)",
) -> Path:
    """A confusion-matrix heat map with counts, rows normalised for the colour so rare classes stay visible."""
    c = confusion.cpu().numpy() if isinstance(confusion, torch.Tensor) else np.asarray(confusion)
    k = c.shape[0]
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if c[i, j]:
                ax.text(j, i, str(int(c[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def metrics_table(summary: dict[str, Any], *, title: str = "metrics", classes: Sequence[str] | None = None) -> Table:
    """A ``rich`` table of a ``hwr.metrics.summarize`` result: headline figures, then per-class rows."""
    table = Table(title=title)
    table.add_column("class")
    for col in ("precision", "recall", "f1", "support"):
        table.add_column(col, justify="right")
    per = summary.get("per_class", {})
    names = classes or [str(i) for i in range(len(per.get("f1", [])))]
    for i, name in enumerate(names):
        table.add_row(name, f"{per['precision'][i]:.4f}", f"{per['recall'][i]:.4f}", f"{per['f1'][i]:.4f}",
                      str(per["support"][i]))
    table.add_section()
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "loss"):
        if key in summary:
            table.add_row(key, "", "", f"{summary[key]:.4f}", "")
    return table


class Progress:
    """A ``hwr.train.Callback`` that shows a ``rich`` progress bar per epoch (loss, samples/s) and prints one
    line of validation figures when the epoch ends. Duck-typed, so this module need not import ``hwr.train``."""

    def __init__(self, epochs: int, *, out: Console | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.epochs, self.console = epochs, out or console
        self.bar = RichProgress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:,.0f} samples/s"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = None

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:
        import time

        self.bar.start()
        self.t0, self.seen = time.perf_counter(), 0.0
        self.task = self.bar.add_task("train", total=num_batches if num_batches >= 0 else None, epoch=epoch + 1,
                                      epochs=self.epochs, loss=float("nan"), rate=0.0)

    def on_step(self, epoch: int, m: dict[str, float]) -> None:
        """Called every ``sync_every`` steps by the fit loop: ``m["steps"]`` steps since the last call."""
        import time

        self.seen += m["count"]
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(self.task, advance=m.get("steps", 1), loss=m["loss"], rate=rate)

    def on_epoch_end(self, epoch: int, state: Any, record: dict[str, Any]) -> None:
        self.bar.remove_task(self.task)
        self.bar.stop()
        parts = [f"epoch {record['epoch']:>3}/{self.epochs}", f"loss {record['train_loss']:.4f}",
                 f"train acc {record['train_accuracy']:.4f}"]
        parts += [f"{k.removeprefix('val_').replace('_', ' ')} {record[k]:.4f}"
                  for k in ("val_accuracy", "val_macro_f1") if k in record]
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
        self.console.print("  ".join(parts))


# ---------------------------------------------------------------------------------------------- studies


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def study_table(study: Any, *, max_params: int = 6) -> Table:
    """Trials of an Optuna study: number, state, value(s), the first params, duration, failure reason."""
    trials = study.get_trials(deepcopy=False)
    names: list[str] = []
    for t in trials:
        names += [k for k in t.params if k not in names]
    names = names[:max_params]
    table = Table(title=f"study {study.study_name}: {len(trials)} trials")
    for col in ("#", "state", "value(s)", *names, "s", "note"):
        table.add_column(col, justify="right" if col not in ("state", "note") else "left")
    for t in trials:
        values = ", ".join(f"{v:.4g}" for v in t.values) if t.values else ""
        dur = f"{t.duration.total_seconds():.0f}" if t.duration else ""
        note = t.user_attrs.get("failure", "")[:40]
        table.add_row(str(t.number), t.state.name, values, *[_fmt(t.params.get(n, "")) for n in names], dur, note)
    return table


def best_summary(study: Any) -> str:
    """One paragraph: the best trial (or the Pareto front size) with its parameters."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return "no completed trial yet"
    if len(study.directions) > 1:
        front = study.best_trials
        lines = [f"Pareto front: {len(front)} trial(s)"]
        for t in sorted(front, key=lambda t: t.values[0]):
            lines.append(f"  #{t.number}: values {[round(v, 5) for v in t.values]}  {t.params}")
        return "\n".join(lines)
    b = study.best_trial
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in b.params.items())
    return f"best trial #{b.number}: value {b.value:.4f}\n  {params}"


def importance_table(study: Any) -> Table | str:
    """fANOVA parameter importances of the first objective (needs a few completed trials)."""
    import optuna

    try:
        imp = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        return f"importances unavailable: {e}"
    table = Table(title="parameter importances (first objective)")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    for k, v in imp.items():
        table.add_row(k, f"{v:.3f}")
    return table


def evaluation_table(result: dict[str, Any]) -> Table:
    """Test macro-F1 and balanced accuracy (mean ± std over seeds) of zero-shot, the best config, the baselines
    and the oracle ceiling, with macro-F1 over the many / medium / few-shot classes."""
    table = Table(title=f"test evaluation: study {result['study']}, best trial #{result['best_trial']}")
    groups = list(result.get("shot_groups") or {})
    for col in ("contender", "macro-F1", "balanced accuracy", *[f"{g}-shot F1" for g in groups], "seeds"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    ceilings = set(result.get("ceilings", ()))
    order = sorted(result["contenders"], key=lambda k: (k in ceilings, k != "zero_shot", k != "best"))
    for label in order:
        r = result["contenders"][label]
        name = f"{label} (ceiling)" if label in ceilings else label
        shots = [f"{r['shot_f1'][g]:.3f}" for g in groups]
        table.add_row(name, f"{r['macro_f1_mean']:.4f} ± {r['macro_f1_std']:.4f}",
                      f"{r['balanced_accuracy_mean']:.4f} ± {r['balanced_accuracy_std']:.4f}", *shots,
                      str(len(r["macro_f1"])))
    from hwr.evaluation import verdict

    table.caption = "; ".join(verdict(result))
    return table


def save_study_plots(study: Any, out: Path, evaluation: dict[str, Any] | None = None) -> list[Path]:
    """Optimisation history, importances, parallel coordinates or Pareto front, and per-class test F1 of the
    best configuration against the untuned baseline (when ``evaluation`` from ``hwr study best --evaluate``)."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    name0 = "first objective" if multi else "value"
    plots = {
        "history.png": lambda: ovm.plot_optimization_history(study, target=target, target_name=name0),
        "importances.png": lambda: ovm.plot_param_importances(study, target=target, target_name=name0),
    }
    if multi:
        plots["pareto.png"] = lambda: ovm.plot_pareto_front(study)
    else:
        plots["parallel.png"] = lambda: ovm.plot_parallel_coordinate(study)
    for fname, make in plots.items():
        try:
            ax = make()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # too few trials for this plot
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(9, 5)
        written.append(save_figure(fig, out / fname))
    if evaluation:
        c = evaluation["contenders"]
        fig, ax = plt.subplots(figsize=(9, 4))
        k = len(c["best"]["per_class_f1_mean"])
        groups = evaluation.get("shot_groups") or {}
        order = [cls for g in ("many", "medium", "few") for cls in groups.get(g, [])] or list(range(k))
        width = 0.8 / len(c)
        for i, (label, r) in enumerate(c.items()):
            ax.bar(np.arange(k) + i * width, [r["per_class_f1_mean"][j] for j in order], width,
                   label=f"{label} ({r['macro_f1_mean']:.3f})")
        ax.set_xticks(np.arange(k) + 0.4 - width / 2, [str(i) for i in order])
        ax.set_xlabel("class (head ... tail of the training set)")
        ax.set_ylabel("test F1 (mean over seeds)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title("per-class test F1: best trial vs baselines")
        written.append(save_figure(fig, out / "per_class_f1.png"))
    return written
