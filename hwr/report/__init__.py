"""What people look at: ``rich`` tables and progress (``hwr.report.console``; calibration and selective
prediction: ``hwr.report.selective``), PNG figures (``hwr.report.figures``) and study plots
(``hwr.report.study_plots``). Importing it draws nothing and switches no matplotlib backend."""

from hwr.report.console import (
    COMPILING,
    Progress,
    bar_text,
    best_summary,
    console,
    epoch_line,
    err_console,
    evaluation_table,
    importance_table,
    metrics_table,
    study_table,
)
from hwr.report.figures import (
    STRINGS_FIGURE,
    compare_figure,
    draw_run,
    draw_strings_run,
    reliability_figure,
    save_confusion,
    save_figure,
    save_image_grid,
    save_image_rows,
    save_strings,
    string_text,
)
from hwr.report.study_plots import save_study_plots

__all__ = [
    "COMPILING",
    "STRINGS_FIGURE",
    "Progress",
    "bar_text",
    "best_summary",
    "compare_figure",
    "console",
    "draw_run",
    "draw_strings_run",
    "epoch_line",
    "err_console",
    "evaluation_table",
    "importance_table",
    "metrics_table",
    "reliability_figure",
    "save_confusion",
    "save_figure",
    "save_image_grid",
    "save_image_rows",
    "save_strings",
    "save_study_plots",
    "string_text",
    "study_table",
]
