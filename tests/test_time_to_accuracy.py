"""benchmarks/time_to_accuracy.py: several recipes side by side in one process, each seed a run folder."""

from __future__ import annotations

import json
from pathlib import Path

from cli_run import python

ROOT = Path(__file__).resolve().parents[1]


def test_two_recipes_run_side_by_side_and_each_row_names_its_recipe(tmp_path):
    out = tmp_path / "tta.json"
    done = python(
        str(ROOT / "benchmarks" / "time_to_accuracy.py"),
        "--recipe",
        "speedrun",
        "fast",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--limit-test",
        "64",
        "--no-compile",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "runs"),
        "--json",
        str(out),
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["recipe"], r["seed"]) for r in rows] == [("speedrun", 0), ("speedrun", 1), ("fast", 0), ("fast", 1)]
    assert all(r["smoke"] and r["precision"] == "fp32" and 0.0 <= r["test_accuracy"] <= 1.0 for r in rows)
    assert len({r["run"] for r in rows}) == 4  # one run folder per recipe and seed
    assert "side by side" in done.stdout and "speedrun" in done.stdout


def test_an_unknown_recipe_is_refused_by_name(tmp_path):
    done = python(
        str(ROOT / "benchmarks" / "time_to_accuracy.py"),
        "--recipe",
        "sprint",
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2 and "sprint" in done.stderr


def test_speedrun_candidates_are_scored_on_validation_only(tmp_path):
    """benchmarks/speedrun_candidates.py: the recipe's choice reads the validation split; no run sees the test."""
    out = tmp_path / "c.json"
    script = ROOT / "benchmarks" / "speedrun_candidates.py"
    args = ["--names", "speedrun,b256_e2", "--limit-train", "512", "--no-compile", "--out", str(tmp_path / "r")]
    done = python(str(script), *args, "--json", str(out), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["speedrun", "b256_e2"] and all(0 < r["val_accuracy"] <= 1 for r in rows)
    for r in rows:
        metrics = json.loads((tmp_path / "r" / f"{r['name']}-fp32-seed0" / "metrics.json").read_text())
        assert metrics["test"] is None and metrics["config"]["epochs"] in (2, 3)
    bad = python(str(script), "--names", "nope", cwd=ROOT)
    assert bad.returncode == 2 and "unknown candidate" in bad.stderr


def test_the_speedrun_recipe_is_the_candidate_it_was_chosen_as():
    import importlib.util

    from hwr import recipes

    spec = importlib.util.spec_from_file_location("speedrun_candidates", ROOT / "benchmarks" / "speedrun_candidates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    chosen, recipe = module.CANDIDATES["speedrun"], recipes.get("speedrun")
    assert (chosen.model_config, chosen.epochs, chosen.batch_size, chosen.optim, chosen.loss) == (
        recipe.model_config,
        recipe.epochs,
        recipe.batch_size,
        recipe.optim,
        recipe.loss,
    )
