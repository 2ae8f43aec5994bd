"""benchmarks/strings_step.py end to end on its --smoke configuration (a tiny crnn, eager): the split of a step's
time it prints and writes. No wall-clock thresholds, only the rows' shape and consistency."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_strings_step_splits_a_step_into_render_step_and_the_rest(tmp_path):
    out = tmp_path / "split.json"
    script = ROOT / "benchmarks" / "strings_step.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "split eager: render" in done.stdout and "prefetch" in done.stdout
    rows = json.loads(out.read_text())
    assert [r["candidate"] for r in rows] == ["eager"]
    r = rows[0]
    assert r["render_ms"] > 0 and r["step_ms"] > 0 and r["loop_ms"] > 0 and r["prefetch_loop_ms"] > 0
    assert abs(r["render_ms"] + r["step_ms"] + r["other_ms"] - r["loop_ms"]) < 1e-6
    assert r["val_s"] >= 0 and r["projected_min"] > 0 and r["threads"] >= 1
