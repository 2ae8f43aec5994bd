"""hwr.report.Progress as the fit loop drives it: the bar moves on every queued step (``on_dispatch``), its
figures read ``-`` until the first loss is read back (``on_step``, every ``sync_every`` steps), a compile is said
aloud before it starts, and each epoch ends in one line with its time."""

import io

from rich.console import Console

from hwr import report

RECORD = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.9, "samples_per_s": 100.0, "train_seconds": 2.25}


def test_progress_moves_every_step_and_shows_no_loss_before_the_first():
    bar = report.Progress(1, out=Console(file=io.StringIO()))
    bar.on_epoch_start(0, 8)
    task = bar.bar.tasks[0]
    assert "nan" not in task.fields["figures"] and task.fields["figures"] == "loss -  - samples/s"
    for i in range(8):  # sync_every=3 over 8 steps: reads after steps 3, 6 and 8
        bar.on_dispatch(0)
        assert task.completed == i + 1
        if i in (2, 5, 7):
            bar.on_step(0, {"loss": 0.5, "count": 32.0 * (3 if i < 7 else 2), "steps": 3 if i < 7 else 2})
    assert task.completed == 8 == task.total and task.fields["figures"].startswith("loss 0.5000  ")
    bar.on_epoch_end(0, None, RECORD)


def test_a_compile_is_announced_and_each_epoch_is_one_line_with_its_time():
    out = io.StringIO()
    bar = report.Progress(1, out=Console(file=out, width=200))
    bar.on_build(False)
    assert out.getvalue() == ""
    bar.on_build(True)
    assert out.getvalue().strip() == report.COMPILING
    assert report.epoch_line(RECORD, 3) == "epoch   1/3  loss 0.5000  train acc 0.9000  100 samples/s  2.2s"
    assert report.bar_text(0.25, 1234.4) == "loss 0.2500  1,234 samples/s"


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
    result["not_applicable"] = {"zero_shot": "the source does not predict the target's classes '[b]', '[/y]'"}
    out = io.StringIO()
    Console(file=out, width=400).print(report.evaluation_table(result))  # class names are text, not markup
    assert (
        "zero-shot (the source as is): not applicable (the source does not predict the target's classes '[b]', "
        "'[/y]')" in out.getvalue()
    )
