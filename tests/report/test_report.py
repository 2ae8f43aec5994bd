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
