"""hwr.report.Progress as the fit loop drives it: ``on_step`` comes every ``sync_every`` steps and advances the bar
by the steps it reports, so the bar ends at the epoch's batch count."""

import io

from rich.console import Console

from hwr import report


def test_progress_advances_by_the_steps_reported():
    bar = report.Progress(1, out=Console(file=io.StringIO()))
    bar.on_epoch_start(0, 8)
    for steps in (3, 3, 2):  # sync_every=3 over 8 steps: two windows and the tail
        bar.on_step(0, {"loss": 0.5, "count": 32.0 * steps, "steps": steps})
    task = bar.bar.tasks[0]
    assert task.completed == 8 == task.total and task.fields["loss"] == 0.5
    bar.on_epoch_end(0, None, {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.9, "samples_per_s": 100.0})


def test_importing_and_drawing_leave_pyplot_and_the_backend_alone(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, matplotlib, torch\n"
        "before = matplotlib.rcParams._get_backend_or_none()\n"
        "from hwr import report\n"
        "from hwr.tasks.digits.training import RunFigures\n"
        "figs = RunFigures(torch.eye(3, dtype=torch.long) * 5, ('a', 'b', 'c'),"
        " torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8), ['a->b'] * 4)\n"
        f"paths = report.draw_run(__import__('pathlib').Path({str(tmp_path)!r}), figs)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert matplotlib.rcParams._get_backend_or_none() == before, 'backend switched'\n"
        "print(sorted(p.name for p in paths))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "['confusion.png', 'errors.png']" in out.stdout
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def _contender(f1s, draws, sources=None):
    out = {
        "macro_f1": f1s,
        "macro_f1_mean": sum(f1s) / len(f1s),
        "macro_f1_std": 0.01,
        "balanced_accuracy_mean": 0.5,
        "balanced_accuracy_std": 0.02,
        "shot_f1": {"many": 0.9, "few": 0.1},
        "draw_macro_f1_means": draws,
        "draw_macro_f1_std": 0.0123,
    }
    if sources:
        out |= {"source_macro_f1_means": sources, "source_macro_f1_std": 0.0456}
    return out


def test_the_evaluation_table_shows_each_contender_and_the_spread_across_draws_and_sources():
    result = {
        "study": "s",
        "best_trial": 3,
        "shot_groups": {"many": [0], "few": [1]},
        "ceilings": ["oracle"],
        "contenders": {
            "oracle": _contender([0.99] * 4, [0.99, 0.99]),
            "best": _contender([0.9, 0.8, 0.9, 0.8], [0.85, 0.85], [0.9, 0.8]),
            "zero_shot": _contender([0.7] * 4, [0.7, 0.7], [0.7, 0.7]),
        },
        "intervals": {},
    }
    out = io.StringIO()
    Console(file=out, width=200).print(report.evaluation_table(result))
    text = out.getvalue()
    lines = [ln for ln in text.splitlines() if "│" in ln]
    assert "across draws" in text and "across sources" in text and "runs" in text
    names = [ln.split("│")[1].strip() for ln in lines]
    assert names == ["zero_shot", "best", "oracle (ceiling)"]  # zero-shot first, the ceiling last, labelled
    best = next(ln for ln in lines if "│ best" in ln)
    assert "0.8500 ± 0.0100" in best and "0.0123" in best and "0.0456" in best and best.rstrip("│ ").endswith("4")
    oracle = next(ln for ln in lines if "oracle" in ln)
    assert "0.0456" not in oracle  # no per-source spread where it has none
