"""benchmarks/strings_step.py end to end on its --smoke configuration (a tiny crnn, eager): the split of a step's
time it prints and writes. No wall-clock thresholds, only the rows' shape and consistency."""

import json
from pathlib import Path

import pytest
from cli_run import python

ROOT = Path(__file__).resolve().parents[1]


def test_strings_step_splits_a_step_into_render_step_and_the_rest(tmp_path):
    out = tmp_path / "split.json"
    script = ROOT / "benchmarks" / "strings_step.py"
    done = python(
        str(script),
        "--smoke",
        "--json",
        str(out),
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "split eager: render" in done.stdout and "prefetch" in done.stdout
    rows = json.loads(out.read_text())
    assert [r["candidate"] for r in rows] == ["eager", "eager@bf16"]  # fp32 and under bf16 autocast
    for r in rows:
        assert r["render_ms"] > 0 and r["step_ms"] > 0 and r["loop_ms"] > 0 and r["prefetch_loop_ms"] > 0
        assert abs(r["render_ms"] + r["step_ms"] + r["other_ms"] - r["loop_ms"]) < 1e-6
        assert r["val_s"] >= 0 and r["projected_min"] > 0 and r["threads"] >= 1


def test_an_unknown_candidate_or_precision_is_refused():
    from benchmarks import strings_step

    with pytest.raises(SystemExit, match="unknown precision 'fp8'"):
        strings_step.measure(strings_step.SMOKE, ["eager@fp8"], steps=1, windows=1)
    with pytest.raises(SystemExit, match="unknown candidate 'nope'"):
        strings_step.measure(strings_step.SMOKE, ["nope"], steps=1, windows=1)
