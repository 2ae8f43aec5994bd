"""hwr.report.selective's tables and hwr.report.reliability_figure: the figures they are given, as written."""

import io

import pytest
import torch
from PIL import Image
from rich.console import Console

from hwr import calibration, report
from hwr.report import selective


def _text(table) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue()


def test_tables_show_their_figures():
    text = _text(
        selective.calibration_table([("softmax", 1.0, 0.0123, 0.0456), ("calibrated", 1.5, 0.004, None)], title="t")
    )
    assert "ECE (15 bins)" in text and "1.23%" in text and "0.0456" in text and "1.500" in text and "-" in text
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64)
    curve = calibration.risk_coverage(conf, torch.tensor([True, False, True, True]))
    text = _text(selective.risk_coverage_table({"softmax": curve}, title="rc"))
    assert "error: softmax" in text and "25.00%" in text and f"{curve.aurc:.5f}" in text and "perfect ranking" in text
    text = _text(selective.threshold_table([(0.01, 0.93, 0.991, 0.0098, 0.95, 0.02)], title="th", where="fonts"))
    assert "fonts coverage" in text and "0.9300" in text and "99.1%" in text and "2.00%" in text


def test_reliability_figure_draws_each_panel(tmp_path):
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(500, generator=g, dtype=torch.float64)
    correct = torch.rand(500, generator=g, dtype=torch.float64) < conf
    r = calibration.reliability(conf, correct)
    fig = report.reliability_figure([("before", r, 0.05), ("after", r, 0.01)], title="reliability")
    assert len(fig.axes) == 4 and "ECE 5.00%" in fig.axes[0].get_title()
    path = report.save_figure(fig, tmp_path / "r.png")
    assert Image.open(path).size[0] > 500
    with pytest.raises(ValueError, match="at least one panel"):
        report.reliability_figure([])
