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
