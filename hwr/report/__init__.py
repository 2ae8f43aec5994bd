"""What people look at: ``rich`` tables and progress (``hwr.report.console``), PNG figures
(``hwr.report.figures``) and study plots (``hwr.report.study_plots``). Importing it draws nothing and switches no
matplotlib backend."""

from hwr.report.console import (
    Progress,
    best_summary,
    console,
    err_console,
    evaluation_table,
    importance_table,
    metrics_table,
    study_table,
)
from hwr.report.figures import draw_run, save_confusion, save_figure, save_image_grid, save_image_rows
from hwr.report.study_plots import save_study_plots

__all__ = [
    "Progress",
    "best_summary",
    "console",
    "draw_run",
    "err_console",
    "evaluation_table",
    "importance_table",
    "metrics_table",
    "save_confusion",
    "save_figure",
    "save_image_grid",
    "save_image_rows",
    "save_study_plots",
    "study_table",
]
