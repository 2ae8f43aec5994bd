"""Tables of calibration and selective prediction (``hwr.calibration``): the expected calibration error and NLL
before and after the temperature, the risk-coverage table with its AURC, and the reject thresholds with what they
keep. Each returns a ``rich`` table; printing is the caller's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table

from hwr.calibration import BINS, COVERAGES, RiskCoverage

__all__ = ["CalibrationRow", "ThresholdRow", "calibration_table", "risk_coverage_table", "threshold_table"]

CalibrationRow = tuple[str, float, float, float | None]  # (label, temperature, ECE, NLL or None)
ThresholdRow = tuple[float, float, float, float, float, float]  # target, P, val coverage, val error, coverage, error


def _pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def calibration_table(rows: Sequence[CalibrationRow], *, title: str) -> Table:
    """Rows ``(label, temperature, ECE, NLL)``: the calibration of one set of readings under each temperature."""
    table = Table(title=title)
    for col in ("confidence", "temperature", f"ECE ({BINS} bins)", "NLL"):
        table.add_column(col, justify="left" if col == "confidence" else "right")
    for label, t, ece, nll in rows:
        table.add_row(label, f"{t:.3f}", _pct(ece), "-" if nll is None else f"{nll:.4f}")
    return table


def risk_coverage_table(
    curves: Mapping[str, RiskCoverage], *, title: str, coverages: Sequence[float] = COVERAGES
) -> Table:
    """The error among the accepted readings at each of ``coverages`` (the most confident share kept), one
    column per confidence in ``curves``, then the AURC and the AURC of a perfect ranking (the floor)."""
    table = Table(title=title)
    table.add_column("coverage", justify="right")
    for name in curves:
        table.add_column(f"error: {name}", justify="right")
    for c in coverages:
        table.add_row(_pct(c, 0), *[_pct(curve.at[float(c)]) for curve in curves.values()])
    table.add_section()
    table.add_row("AURC", *[f"{curve.aurc:.5f}" for curve in curves.values()])
    table.add_row("perfect ranking", *[f"{curve.oracle_aurc:.5f}" for curve in curves.values()])
    return table


def threshold_table(rows: Sequence[ThresholdRow], *, title: str, where: str | None = None) -> Table:
    """Rows ``(target error, threshold P, coverage and error on validation, coverage and error on where)``: what
    a stored reject threshold keeps on the data it was chosen on and on ``where`` (None: validation only; the
    last two figures of each row are then not shown)."""
    table = Table(title=title)
    cols = ["target error", "reject below P", "val coverage", "val error"]
    for col in cols + ([f"{where} coverage", f"{where} error"] if where else []):
        table.add_column(col, justify="right")
    for target, p, vc, ve, c, e in rows:
        more = [_pct(c, 1), _pct(e)] if where else []
        table.add_row(_pct(target, 3 if target < 0.001 else 2), f"{p:.4f}", _pct(vc, 1), _pct(ve), *more)
    return table
