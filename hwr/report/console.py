"""What people read in a terminal or a log: ``rich`` tables (a run's metrics, a study's trials, importances, the
test evaluation) and the fit loop's progress bar. Off a terminal, tables keep their natural width."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "COMPILING",
    "Progress",
    "bar_text",
    "best_summary",
    "console",
    "epoch_line",
    "err_console",
    "evaluation_table",
    "importance_table",
    "metrics_table",
    "set_width",
    "study_table",
]

# Piped into a log (`make run > log`), rich would squeeze tables into 80 columns (`COMP…`): off a terminal, lay
# them out at their natural width instead (tables do not stretch to the console's width).
_WIDE = 240
# soft_wrap: a line (a hint to paste, a path) is never broken at $COLUMNS; tables still fit the width. emoji=False:
# hwr writes no emoji codes, and a path or class name holding ":cat:" or ":ok:" prints as typed
console = Console(stderr=False, width=None if sys.stdout.isatty() else _WIDE, soft_wrap=True, emoji=False)
# visible when stdout is piped; soft_wrap: a message (an error, a hint to paste) is one line at any $COLUMNS
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDE, soft_wrap=True, emoji=False)


def set_width(columns: int) -> None:
    """Lay tables and lines out in ``columns`` characters (the CLI passes ``$COLUMNS``), on a terminal or off it."""
    console.width = err_console.width = columns


def metrics_table(summary: dict[str, Any], *, title: str = "metrics", classes: Sequence[str] | None = None) -> Table:
    """A ``rich`` table of a ``hwr.metrics.summarize`` result: headline figures, then per-class rows."""
    table = Table(title=title)
    table.add_column("class")
    for col in ("precision", "recall", "f1", "support"):
        table.add_column(col, justify="right")
    per = summary.get("per_class", {})
    names = classes or [str(i) for i in range(len(per.get("f1", [])))]
    for i, name in enumerate(names):
        table.add_row(
            name, f"{per['precision'][i]:.4f}", f"{per['recall'][i]:.4f}", f"{per['f1'][i]:.4f}", str(per["support"][i])
        )
    table.add_section()
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "loss"):
        if key in summary:
            table.add_row(key, "", "", f"{summary[key]:.4f}", "")
    return table


COMPILING = "compiling the step (the first run on this machine takes about a minute; later runs reuse the cache)"


def bar_text(loss: float | None, rate: float | None) -> str:
    """The progress bar's figures: ``-`` until the first loss is read back (never ``nan``, which reads as a
    diverged run), then the loss since the last read and the epoch's samples/s so far."""
    shown_loss = "-" if loss is None else f"{loss:.4f}"
    shown_rate = "-" if rate is None else f"{rate:,.0f}"
    return f"loss {shown_loss}  {shown_rate} samples/s"


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One line per finished epoch (what a log or CI shows): loss, train and validation figures, throughput, time."""
    parts = [
        f"epoch {record['epoch']:>3}/{epochs}",
        f"loss {record['train_loss']:.4f}",
        f"train acc {record['train_accuracy']:.4f}",
    ]
    parts += [
        f"{k.removeprefix('val_').replace('_', ' ')} {record[k]:.4f}"
        for k in ("val_accuracy", "val_macro_f1")
        if k in record
    ]
    parts.append(f"{record['samples_per_s']:,.0f} samples/s")
    if "train_seconds" in record:
        parts.append(f"{record['train_seconds']:.1f}s")
    return "  ".join(parts)


class Progress:
    """A ``hwr.engine.train.Callback`` that says when the step compiles, shows a ``rich`` progress bar per epoch
    (moved on every step; loss and samples/s from each read-back) and prints one line when the epoch ends
    (``epoch_line``; off a terminal rich draws no bar, so a log gets just these lines). Duck-typed, so this module
    need not import ``hwr.engine.train``."""

    def __init__(self, epochs: int, *, out: Console | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.epochs, self.console = epochs, out or console
        self.bar = RichProgress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[figures]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = None

    def on_build(self, compile: bool) -> None:
        if compile:
            self.console.print(COMPILING, highlight=False)

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:
        import time

        self.bar.start()
        self.t0, self.seen = time.perf_counter(), 0.0
        self.task = self.bar.add_task(
            "train",
            total=num_batches if num_batches >= 0 else None,
            epoch=epoch + 1,
            epochs=self.epochs,
            figures=bar_text(None, None),
        )

    def on_dispatch(self, epoch: int) -> None:
        self.bar.update(self.task, advance=1)

    def on_step(self, epoch: int, m: dict[str, float]) -> None:
        """Called every ``sync_every`` steps by the fit loop with the loss since the last call."""
        import time

        self.seen += m["count"]
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(self.task, figures=bar_text(m["loss"], rate))

    def on_epoch_end(self, epoch: int, state: Any, record: dict[str, Any]) -> None:
        self.bar.remove_task(self.task)
        self.bar.stop()
        self.console.print(epoch_line(record, self.epochs), highlight=False)


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
    """PED-ANOVA parameter importances (Optuna's ``PedAnovaImportanceEvaluator``, ``hwr.tune.param_importances``)
    of the first objective in its own direction: what reaches its best 10% of trials. Needs a few completed
    trials."""
    import optuna

    from hwr.tune.study import IMPORTANCE_EVALUATOR, param_importances

    try:
        imp = param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        return f"importances unavailable: {e}"
    best = "highest" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else "lowest"
    table = Table(title=f"parameter importances ({IMPORTANCE_EVALUATOR}: what reaches the {best} first objective)")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    for k, v in imp.items():
        table.add_row(k, f"{v:.3f}")
    return table


def evaluation_table(result: dict[str, Any]) -> Table:
    """Test macro-F1 and balanced accuracy (mean ± std over the paired runs) of zero-shot, the best config, the
    baselines and the oracle ceiling, with macro-F1 over the many / medium / few-shot classes, and the spread
    (std) of the per-draw and per-source means where the evaluation has several: the variation beyond
    fine-tuning noise."""
    table = Table(title=f"test evaluation: study {result['study']}, best trial #{result['best_trial']}")
    groups = list(result.get("shot_groups") or {})
    rows = result["contenders"]
    spreads = [
        (key, col)
        for key, col in (("draw_macro_f1_std", "across draws"), ("source_macro_f1_std", "across sources"))
        if any(len(r.get(key.replace("_std", "_means"), ())) > 1 for r in rows.values())
    ]
    columns = ("contender", "macro-F1", "balanced accuracy", *[f"{g}-shot F1" for g in groups])
    for col in (*columns, *[c for _, c in spreads], "runs"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    ceilings = set(result.get("ceilings", ()))
    for label in sorted(rows, key=lambda k: (k in ceilings, k != "zero_shot", k != "best")):
        r = rows[label]
        table.add_row(
            f"{label} (ceiling)" if label in ceilings else label,
            f"{r['macro_f1_mean']:.4f} ± {r['macro_f1_std']:.4f}",
            f"{r['balanced_accuracy_mean']:.4f} ± {r['balanced_accuracy_std']:.4f}",
            *[f"{r['shot_f1'][g]:.3f}" for g in groups],
            *[f"{r[key]:.4f}" if key in r else "" for key, _ in spreads],
            str(len(r["macro_f1"])),
        )
    from hwr.tune.evaluation import verdict

    table.caption = Text("; ".join(verdict(result)))  # plain text: class names in it are not markup
    return table
