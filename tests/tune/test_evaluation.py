"""hwr.tune.evaluation: re-running the top trials ranks them by their mean (a lucky trial does not win), the shot
groups, the verdict sentences; hwr.tune.study's validation protocol."""

import dataclasses
import json

import optuna
import pytest
from optuna.distributions import FloatDistribution
from tiny import TINY_CNN

from hwr import tune
from hwr.config import to_dict
from hwr.optim import OptimConfig
from hwr.tasks.digits.config import RunConfig
from hwr.tune import evaluation, study

TINY = RunConfig(
    model_config=TINY_CNN,
    dataset="optdigits",
    epochs=2,
    batch_size=32,
    limit_train=256,
    limit_test=100,
    validation="heldout",
)  # eager: StudySpec.execution's default


def _spec(**kw):
    return tune.StudySpec(
        "t",
        "",
        lambda t, c: TINY,
        ("val_macro_f1",),
        ("maximize",),
        2,
        lambda s: optuna.samplers.RandomSampler(s),
        **kw,
    )


def _study_with(trials, enqueued: float | None = None):
    """A study of completed trials ``(value, config)``; the one whose value is ``enqueued`` ran an enqueued point
    (its ``fixed_params``), as the study's start does."""
    s = optuna.create_study(direction="maximize")
    for value, cfg in trials:
        s.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"x": value},
                distributions={"x": FloatDistribution(0, 1)},
                user_attrs={"config": to_dict(cfg)},
                system_attrs={"fixed_params": {"x": value}} if value == enqueued else {},
            )
        )
    return s


def test_rerunning_the_top_trials_demotes_a_lucky_one(tmp_path):
    lucky = dataclasses.replace(TINY, optim=OptimConfig("adam", 1e-7))  # cannot learn: its 0.99 was luck
    good = dataclasses.replace(TINY, optim=OptimConfig("adam", 3e-3))
    s = _study_with([(0.99, lucky), (0.90, good), (0.10, good)])
    spec = _spec(rerun_top=2, rerun_seeds=(7, 8))
    seen = []
    winner, rows = evaluation.select(spec, s, tmp_path, on_run=lambda label, seed, r: seen.append((label, seed)))
    assert [r["trial"] for r in rows] == [0, 1] and all(len(r["values"]) == 3 for r in rows)
    assert winner.number == 1 and rows[1]["mean"] > rows[0]["mean"]
    assert sorted(seen) == [("rerun #0", 7), ("rerun #0", 8), ("rerun #1", 7), ("rerun #1", 8)]
    # a finished re-run is reused: no training the second time
    again = []
    evaluation.select(spec, s, tmp_path, on_run=lambda *a: again.append(a))
    assert len(again) == 4 and all(r[2]["config"]["seed"] in (7, 8) for r in again)


def test_without_reruns_the_best_value_wins(tmp_path):
    s = _study_with([(0.5, TINY), (0.7, TINY)])
    winner, rows = evaluation.select(_spec(), s, tmp_path)
    assert winner.number == 1 and rows == [{"trial": 1, "values": [0.7], "reruns": [], "mean": 0.7}]
    with pytest.raises(tune.StudyError, match="no completed trial"):
        evaluation.select(_spec(), optuna.create_study(direction="maximize"), tmp_path)


def test_shot_groups_split_classes_into_thirds_by_training_count():
    g = evaluation.shot_groups([105, 62, 37, 22, 13, 8, 4, 2, 1, 1])
    assert g == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
    g2 = evaluation.shot_groups([3, 50, 1, 20])
    assert g2["many"] == [1] and g2["few"] == [2] and sorted(c for cs in g2.values() for c in cs) == [0, 1, 2, 3]


def _iv(mean, low, high, n=3):
    return {"mean": mean, "low": low, "high": high, "n": n, "level": 0.95}


def test_verdict_says_beats_only_where_the_interval_excludes_zero():
    lose = {
        "best_trial": 3,
        "intervals": {"zero_shot": _iv(-0.02, -0.03, -0.01), "start": _iv(0.01, -0.005, 0.025)},
        "selected_val_test_gap": 0.05,
    }
    lines = evaluation.verdict(lose)
    assert lines[0].startswith("WARNING") and "loses to zero-shot" in lines[1] and "-2.00" in lines[1]
    assert "shows no detectable difference from the study's start: +1.00" in lines[2] and "[-0.50, +2.50]" in lines[2]
    assert "did not beat its own untuned starting point" in lines[3] and "+5.00" in lines[4]
    win = evaluation.verdict({"best_trial": 1, "intervals": {"zero_shot": _iv(0.04, 0.01, 0.07, 9)}})
    assert win == [
        "best beats zero-shot (the source as is): +4.00 macro-F1 points, 95% interval [+1.00, +7.00] over 9 paired runs"
    ]
    one = evaluation.verdict({"best_trial": 1, "intervals": {"plain_finetune": _iv(0.04, None, None, 1)}})
    assert one == [
        "best shows no detectable difference from plain_finetune: +4.00 macro-F1 points, one run: no interval over 1 paired runs"
    ]
    assert not any("every seed" in line for line in lines + win)


def test_verdict_says_beats_only_where_the_runs_and_the_images_both_exclude_zero():
    """Two estimates of one gain: the t interval over the paired runs and the bootstrap over runs and test images.
    With few runs the bootstrap's percentiles can be the narrower (no t-quantile): "beats" needs both."""
    runs_straddle = {"intervals": {"plain_finetune": _iv(0.0018, -0.0002, 0.0039, 5)}}
    images_clear = {"intervals_images": {"plain_finetune": _iv(0.0018, 0.0003, 0.0032, 5)}}
    (line,) = evaluation.verdict({**runs_straddle, **images_clear})
    assert line.startswith("best shows no detectable difference from plain_finetune: +0.18")
    assert "[+0.03, +0.32] resampling the 5 paired runs and the test images" in line and "[-0.02, +0.39]" in line
    runs_clear = {"intervals": {"plain_finetune": _iv(0.0018, 0.0005, 0.0031, 5)}}
    images_straddle = {"intervals_images": {"plain_finetune": _iv(0.0018, -0.0001, 0.0040, 5)}}
    (line,) = evaluation.verdict({**runs_clear, **images_straddle})
    assert line.startswith("best shows no detectable difference from plain_finetune")
    (line,) = evaluation.verdict({**runs_clear, **images_clear})
    assert line.startswith("best beats plain_finetune")
    lose = {"intervals": {"zero_shot": _iv(-0.02, -0.03, -0.01, 5)}}
    lines = evaluation.verdict({**lose, "intervals_images": {"zero_shot": _iv(-0.02, -0.04, -0.005, 5)}})
    assert lines[0].startswith("WARNING") and "loses to zero-shot" in lines[1]


def test_gains_are_paired_intervals_over_the_seeds():
    contenders = {
        "best": {"macro_f1": [0.96, 0.97, 0.98, 0.99]},
        "zero_shot": {"macro_f1": [0.95, 0.95, 0.95, 0.95]},
        "plain_finetune": {"macro_f1": [0.96, 0.96, 0.96, 0.96]},
    }
    g = evaluation._gains({"contenders": contenders}, "plain_finetune")
    zs = g["intervals"]["zero_shot"]
    # diffs 0.01..0.04: mean 0.025, sd 0.01291, t(0.975, 3) = 3.182 -> half-width 0.02054
    assert zs["mean"] == pytest.approx(0.025) and zs["low"] == pytest.approx(0.004457, abs=1e-6)
    assert zs["high"] == pytest.approx(0.045543, abs=1e-6) and zs["n"] == 4
    assert g["gain_macro_f1_vs_plain_finetune"] == pytest.approx(0.015) and "start" not in g["intervals"]


def test_the_start_row_is_the_first_enqueued_trial(tmp_path):
    spec = _spec(initial=({"x": 0.3},))
    s = optuna.create_study(direction="maximize")
    s.enqueue_trial({"x": 0.3})
    for _ in range(3):
        t = s.ask({"x": FloatDistribution(0, 1)})
        t.set_user_attr("config", to_dict(TINY))
        s.tell(t, t.params["x"])
    start = evaluation.start_trial(spec, s)
    assert start.number == 0 and start.params == {"x": 0.3}
    assert evaluation.start_trial(_spec(), s) is None


def test_spec_protocol_and_errors():
    cfg = RunConfig()
    assert _spec(validation="heldout").protocol(cfg).validation == "heldout"
    k = _spec(validation="kfold", folds=3)
    assert k.fold_count() == 3 and (k.protocol(cfg, 2).fold, k.protocol(cfg, 2).folds) == (2, 3)
    assert _spec().protocol(cfg) is cfg and _spec().fold_count() == 1
    for bad, match in (
        (dict(validation="holdout"), "validation must be"),
        (dict(validation="kfold", folds=1), "folds"),
        (dict(rerun_top=0), "rerun_top"),
        (dict(oracle=lambda b, c: b), "oracle needs a source"),
    ):
        with pytest.raises(tune.StudyError, match=match):
            _spec(**bad)


def test_kfold_protocol_trains_every_fold_and_averages(tmp_path):
    spec = _spec(validation="kfold", folds=2)
    s = study.optimize(spec, storage_url=f"sqlite:///{tmp_path}/k.db", n_trials=1, root=tmp_path)
    t = s.trials[0]
    folds = t.user_attrs["fold_values"]
    assert len(folds) == 2 and t.value == pytest.approx((folds[0][0] + folds[1][0]) / 2)
    run = tmp_path / "studies" / "t" / "trial_0000"
    assert (run / "fold0" / "metrics.json").is_file() and (run / "fold1" / "metrics.json").is_file()


def test_evaluation_pairs_every_contender_over_draws_and_seeds(tmp_path):
    """Two draws x two seeds: four paired runs per contender, the start row from the enqueued trial, per-draw
    means and the paired intervals over all four."""
    from tiny import TINY_STUDY

    base = tune.load_spec(str(TINY_STUDY))
    spec = dataclasses.replace(
        base,
        n_trials=2,
        eval_seeds=(1, 2),
        initial=({"hidden": 16, "lr": 3e-3},),
        eval_draws=lambda t: (t, "optdigits:val=30"),
    )
    s = tune.optimize(spec, storage_url=f"sqlite:///{tmp_path / 'db.sqlite'}", name="tiny", root=tmp_path)
    r = evaluation.evaluate_best(spec, s, root=tmp_path)
    assert r["draws"] == ["optdigits", "optdigits:val=30"] and r["start_trial"] == 0
    for label in ("best", "start", "plain_finetune"):
        c = r["contenders"][label]
        assert len(c["macro_f1"]) == 4 and len(c["draw_macro_f1_means"]) == 2
    runs_on = {
        json.loads(p.read_text())["config"]["dataset"]
        for p in (tmp_path / "studies" / "tiny" / "evaluation").glob("best*/metrics.json")
    }
    assert runs_on == {"optdigits", "optdigits:val=30"}
    assert r["intervals"]["start"]["n"] == 4 and r["intervals"]["plain_finetune"]["n"] == 4
    # the same gains with intervals that resample the test images too, from each run's predictions: the same means
    # (the predictions reproduce every run's recorded test macro-F1), and words that follow them
    assert set(r["intervals_images"]) == set(r["intervals"]) == {"start", "plain_finetune"}  # no source: no zero-shot
    for ref in r["intervals"]:
        images, runs_only = r["intervals_images"][ref], r["intervals"][ref]
        assert images["mean"] == pytest.approx(runs_only["mean"], abs=1e-9) and images["n"] == 4
        assert images["low"] <= images["mean"] <= images["high"]
    line = next(x for x in evaluation.verdict(r) if "plain_finetune:" in x)
    assert (
        "resampling the 4 paired runs and the test images (95% interval [" in line
        and "over 4 paired runs alone)" in line
    )


def test_the_start_is_rerun_beside_the_top_trials_and_can_win(tmp_path):
    """A lucky trial outranks the untuned start on one validation figure; the start, re-run on the same seeds
    though not among the top, wins where its re-runs are better (and a pruned start's partial figure is not used)."""
    lucky = dataclasses.replace(TINY, optim=OptimConfig("adam", 1e-7))  # cannot learn: its 0.99 was luck
    good = dataclasses.replace(TINY, epochs=8, optim=OptimConfig("adam", 1e-2))
    for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        s = optuna.create_study(direction="maximize")
        s.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=0.60 if state == optuna.trial.TrialState.COMPLETE else None,
                intermediate_values={1: 0.05},
                params={"x": 0.1},
                distributions={"x": FloatDistribution(0, 1)},
                user_attrs={"config": to_dict(good)},
                system_attrs={"fixed_params": {"x": 0.1}},
            )
        )
        for value in (0.95, 0.94):
            s.add_trial(
                optuna.trial.create_trial(
                    value=value,
                    params={"x": value},
                    distributions={"x": FloatDistribution(0, 1)},
                    user_attrs={"config": to_dict(lucky)},
                )
            )
        spec = _spec(rerun_top=2, rerun_seeds=(7, 8, 9), initial=({"x": 0.1},))
        assert evaluation.start_trial(spec, s).number == 0
        winner, rows = evaluation.select(spec, s, tmp_path / state.name)
        assert [r["trial"] for r in rows] == [1, 2, 0] and winner.number == 0, rows
        assert all(r["vs_start"]["high"] < 0 for r in rows[:2])  # the lucky trials lose on every re-run seed
        assert len(rows[2]["values"]) == (4 if state == optuna.trial.TrialState.COMPLETE else 3)
    assert evaluation.select(_spec(rerun_top=2, rerun_seeds=(7, 8)), s, tmp_path / "none")[0].number != 0


def _rows(start, *others):
    return [{"trial": 0, "reruns": start}] + [{"trial": i + 1, "reruns": r} for i, r in enumerate(others)]


def test_a_trial_replaces_the_start_only_where_its_paired_interval_excludes_zero():
    """The start stays unless a trial's re-runs beat its re-runs on the same seeds with a 95% interval above zero;
    among those that do, the best re-run mean wins; a minimised metric is read the other way round."""
    close = [0.93, 0.90, 0.95]  # mean +0.0067 over the start, but a seed where it loses: the interval holds zero
    clear = [0.95, 0.94, 0.96]  # +0.03 to +0.04 on every seed
    clearer_but_noisy = [0.99, 0.91, 0.99]  # the highest mean, interval holds zero
    start = [0.92, 0.91, 0.92]
    rows = _rows(start, close)
    assert evaluation._winner(rows, 0, 1.0)["trial"] == 0
    assert rows[1]["vs_start"]["low"] < 0 < rows[1]["vs_start"]["high"] and rows[1]["vs_start"]["n"] == 3
    rows = _rows(start, close, clear, clearer_but_noisy)
    assert evaluation._winner(rows, 0, 1.0)["trial"] == 2 and rows[2]["vs_start"]["low"] > 0
    both_beat = _rows([0.90, 0.91, 0.90], [0.95, 0.96, 0.95], [0.97, 0.98, 0.97])
    assert evaluation._winner(both_beat, 0, 1.0)["trial"] == 2  # the higher re-run mean of the two
    lower_is_better = _rows([0.10, 0.11, 0.12], [0.05, 0.06, 0.06], [0.20, 0.21, 0.22])
    assert evaluation._winner(lower_is_better, 0, -1.0)["trial"] == 1
    one_seed = _rows([0.5], [0.9])  # one paired unit: no interval, the start stays
    assert evaluation._winner(one_seed, 0, 1.0)["trial"] == 0 and one_seed[1]["vs_start"]["low"] is None
    two_seeds = _rows([0.90, 0.90], [0.9025, 0.9025])  # one image better on both: a zero-wide interval, not a win
    assert evaluation._winner(two_seeds, 0, 1.0)["trial"] == 0 and two_seeds[1]["vs_start"]["low"] > 0


def test_the_level_is_bonferronis_over_the_trials_compared():
    """A lead whose 95% interval just clears zero wins against the start alone, but not as one of three trials
    compared (98.33% each, so a trial no better than the start is named at most 5% of the time)."""
    start = [0.90, 0.91, 0.90, 0.91, 0.90]
    lead = [0.91, 0.93, 0.905, 0.925, 0.90]  # +1.0 points, 95% interval about [+0.02, +1.98]
    alone = _rows(start, lead)
    assert evaluation._winner(alone, 0, 1.0)["trial"] == 1 and alone[1]["vs_start"]["level"] == 0.95
    among = _rows(start, lead, [0.80] * 5, [0.85] * 5)
    assert evaluation._winner(among, 0, 1.0)["trial"] == 0
    assert among[1]["vs_start"]["level"] == pytest.approx(1 - 0.05 / 3) and among[1]["vs_start"]["low"] < 0
    no_start = [{"trial": 3, "mean": 0.8}, {"trial": 4, "mean": 0.9}]
    assert evaluation._winner(no_start, None, 1.0)["trial"] == 4


def test_a_trial_that_beats_the_start_on_every_rerun_is_selected(tmp_path):
    """End to end through ``select``: a start that cannot learn (learning rate 1e-7) is beaten on all three re-run
    seeds by a trial that learns, and the row records the interval that says so."""
    frozen = dataclasses.replace(TINY, optim=OptimConfig("adam", 1e-7))
    good = dataclasses.replace(TINY, epochs=6, optim=OptimConfig("adam", 1e-2))
    s = _study_with([(0.5, frozen), (0.9, good)], enqueued=0.5)
    spec = _spec(rerun_top=2, rerun_seeds=(7, 8, 9), initial=({"x": 0.5},))
    winner, rows = evaluation.select(spec, s, tmp_path)
    assert [r["trial"] for r in rows] == [1, 0] and rows[0]["vs_start"]["low"] > 0, rows
    assert winner.number == 1 and len(rows[0]["reruns"]) == 3 and "vs_start" not in rows[1]


def test_a_best_that_is_the_start_trains_once_and_ties_it(tmp_path):
    """With one re-run seed nothing can beat the start (no interval), so the start is the best: both rows are the
    same runs (one folder per config), and best - start is exactly zero, not called a win."""
    from tiny import TINY_STUDY

    spec = dataclasses.replace(
        tune.load_spec(str(TINY_STUDY)),
        n_trials=2,
        rerun_top=2,
        rerun_seeds=(5,),
        initial=({"hidden": 16, "lr": 3e-3},),
        baselines=None,
        reference=None,
    )
    s = tune.optimize(spec, storage_url=f"sqlite:///{tmp_path / 'db.sqlite'}", name="tiny", root=tmp_path)
    r = evaluation.evaluate_best(spec, s, root=tmp_path)
    assert r["best_trial"] == r["start_trial"] == 0
    best, start = r["contenders"]["best"], r["contenders"]["start"]
    assert best["macro_f1"] == start["macro_f1"] and r["intervals"]["start"]["mean"] == 0.0
    folders = sorted(p.name for p in (tmp_path / "studies" / "tiny" / "evaluation").iterdir())
    assert folders == ["best_seed1", "best_seed2", "rerun_0_seed5", "rerun_1_seed5"], folders
    lines = evaluation.verdict(r)
    assert "best shows no detectable difference from the study's start: +0.00 macro-F1 points" in lines[0]
    assert "the search did not beat its own untuned starting point" in lines


def test_the_verdict_says_how_the_winner_was_named():
    base = {"intervals": {}, "start_trial": 0}
    stay = _rows([0.92, 0.91, 0.92], [0.93, 0.90, 0.95])
    evaluation._winner(stay, 0, 1.0)
    lines = evaluation.verdict({**base, "best_trial": 0, "selection": stay})
    assert lines == [
        "selected the start (#0): no trial's re-runs beat it with a 95% interval above zero "
        "(closest: #1 +1.00 points [-3.97, +5.97] over 3 re-run seeds)"
    ]
    win = _rows([0.92, 0.91, 0.92], [0.95, 0.94, 0.96])
    evaluation._winner(win, 0, 1.0)
    (line,) = evaluation.verdict({**base, "best_trial": 1, "selection": win})
    assert line.startswith("selected trial #1: its re-runs beat the start's, #1 +3.33 points [+1.90, +4.77]")
    assert evaluation.verdict({**base, "best_trial": 1, "selection": [{"trial": 1, "mean": 0.9}]}) == []


def test_enough_runs_adds_independent_seeds_for_a_single_draw():
    """A user's folder is one draw: its evaluation gets seeds (and a pretrained source per seed) up to
    ``min_paired_runs``; three draws already give enough, and 0 leaves the spec as it is."""
    spec = _spec(eval_seeds=(101, 102, 103), min_paired_runs=5)
    one = evaluation.enough_runs(spec, 1)
    assert one.eval_seeds == (101, 102, 103, 104, 105) and one.eval_sources == 1
    plain = _spec()
    assert evaluation.enough_runs(spec, 3) is spec and evaluation.enough_runs(plain, 1) is plain
    with_sources = dataclasses.replace(spec, eval_sources=3, source=TINY)
    assert evaluation.enough_runs(with_sources, 1).eval_sources == 5
    assert evaluation.enough_runs(dataclasses.replace(spec, min_paired_runs=4), 2).eval_seeds == (101, 102, 103)


def test_a_single_draw_evaluation_trains_min_paired_runs(tmp_path):
    from tiny import TINY_STUDY

    spec = dataclasses.replace(tune.load_spec(str(TINY_STUDY)), n_trials=1, eval_seeds=(1, 2), min_paired_runs=3)
    s = tune.optimize(spec, storage_url=f"sqlite:///{tmp_path / 'db.sqlite'}", name="tiny", root=tmp_path)
    r = evaluation.evaluate_best(spec, s, root=tmp_path)
    assert r["seeds"] == [1, 2, 3] and len(r["contenders"]["best"]["macro_f1"]) == 3
    assert r["intervals"]["plain_finetune"]["n"] == 3


UNSTABLE = dataclasses.replace(TINY, optim=OptimConfig("adam", 1e30))  # its loss turns NaN within the first epoch


def test_a_rerun_that_diverges_is_left_out_and_the_selection_goes_on(tmp_path):
    """Runs are deterministic: a re-run whose loss turns NaN would fail on every retry, so it is recorded as
    ``failed`` (the trial not ranked) instead of stopping ``hwr study best --evaluate`` for good."""
    s = _study_with([(0.9, UNSTABLE), (0.5, TINY)])
    seen = []
    winner, rows = evaluation.select(
        _spec(rerun_top=2, rerun_seeds=(7, 8)), s, tmp_path, on_run=lambda *a: seen.append(a)
    )
    assert winner.number == 1 and rows[0]["trial"] == 0 and "non-finite" in rows[0]["failed"]
    assert rows[0]["failed"].startswith("seed 7: loss became non-finite") and len(rows[1]["reruns"]) == 2
    assert sum("failed" in r for _, _, r in seen) == 2
    with pytest.raises(tune.StudyError, match=r"every re-run trial .* diverged: seed 7: loss became non-finite"):
        evaluation.select(_spec(rerun_top=2, rerun_seeds=(7,)), _study_with([(0.9, UNSTABLE)]), tmp_path / "b")


def test_a_contender_that_diverges_is_not_applicable_and_the_rest_is_reported(tmp_path):
    s = _study_with([(0.5, TINY)])
    spec = _spec(eval_seeds=(1, 2), baselines=lambda ctx: {"unstable": UNSTABLE, "steady": TINY}, reference="steady")
    r = evaluation.evaluate_best(spec, s, root=tmp_path)
    assert set(r["contenders"]) == {"best", "steady"} and "intervals" in r and "steady" in r["intervals"]
    assert r["not_applicable"]["unstable"].startswith("its training diverged (seed 1: loss became non-finite"), r[
        "not_applicable"
    ]
    assert "unstable: not applicable (its training diverged" in evaluation.verdict(r)[0]
    with pytest.raises(tune.StudyError, match="the selected trial #0 diverged on an evaluation run"):
        evaluation.evaluate_best(_spec(eval_seeds=(1,)), _study_with([(0.5, UNSTABLE)]), root=tmp_path / "b")


def test_a_run_is_reused_only_when_its_final_checkpoint_is_complete(tmp_path):
    """``finish`` writes metrics.json before the final checkpoint: metrics alone is a run killed in between (its
    checkpoint is an epoch's, before any post-training), so the evaluation trains it again."""
    from hwr import checkpoint, runs, tree
    from hwr.config import DataSettings
    from hwr.engine.execution import Execution

    out = tmp_path / "run"
    first = evaluation._run(TINY, out, (), Execution(compile=False), DataSettings(), test_split=True)
    assert runs.finished(out)
    tensors, meta = checkpoint.load_flat(out / runs.CHECKPOINT)
    checkpoint.save(
        out / runs.CHECKPOINT, tree.unflatten_names(tensors), {**meta, "complete": False}
    )  # killed before the final save
    (out / "marker").write_text("a folder train_fresh starts afresh")
    assert not runs.finished(out)
    again = evaluation._run(TINY, out, (), Execution(compile=False), DataSettings(), test_split=True)
    assert not (out / "marker").exists() and runs.finished(out) and again["test"] == first["test"]
    (out / runs.CHECKPOINT).unlink()
    assert not runs.finished(out) and not runs.finished(tmp_path / "nothing")


def test_a_study_keeps_its_data_set_and_reads_an_older_relative_record(tmp_path, monkeypatch):
    """A study's data set is fixed at its first run: another one is refused naming the fix; a record an older
    version stored relative (``folder:mine``) still matches the absolute name the CLI passes now."""
    spec = dataclasses.replace(_spec(), n_trials=1)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    s = tune.optimize(spec, storage_url=url, name="t", root=tmp_path, dataset="optdigits")
    with pytest.raises(tune.StudyError, match="runs on dataset 'optdigits', not 'optdigits:val=30'; choose another"):
        tune.optimize(spec, storage_url=url, name="t", root=tmp_path, dataset="optdigits:val=30")
    s.set_user_attr("dataset", "folder:mine")
    monkeypatch.chdir(tmp_path)
    mine = f"folder:{tmp_path.resolve() / 'mine'}"
    again = tune.optimize(spec, storage_url=url, name="t", root=tmp_path, dataset=mine)
    assert again.user_attrs["dataset"] == mine and len(again.trials) == 1


def _drawn_folder(root, counts):
    """``root/train/<c>/`` with ``counts[c]`` PNG strokes of class ``c`` and ``root/test/<c>/`` with 3 each."""
    from PIL import Image, ImageDraw

    for split, ns in (("train", counts), ("test", [3] * len(counts))):
        for c, n in enumerate(ns):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.new("L", (36, 44), 255)
                ImageDraw.Draw(img).line([(8 + 9 * c, 6), (12 + i % 5, 38)], fill=0, width=3 + i % 2)
                img.save(root / split / str(c) / f"{i}.png")
    return root


def test_a_run_on_a_users_folder_is_reused_only_while_the_folder_holds_the_same_images(tmp_path):
    """A folder's name stays while its files change: the evaluation reuses a finished run only where the images'
    identity it recorded (``data_digest``) is the folder's now, so an image added since trains it again."""
    from hwr.config import DataSettings
    from hwr.engine.execution import Execution

    mine = _drawn_folder(tmp_path / "mine", [12, 12])
    cfg = dataclasses.replace(TINY, dataset=f"folder:{mine}", batch_size=8, limit_train=0, limit_test=0)
    out, data, eager = tmp_path / "run", DataSettings(root=tmp_path / "data"), Execution(compile=False)
    first = evaluation._run(cfg, out, (), eager, data, test_split=True)
    assert len(first["data_digest"]) == 40
    (out / "marker").write_text("kept while the run is reused")
    assert evaluation._run(cfg, out, (), eager, data, test_split=True) == first and (out / "marker").exists()
    (mine / "train" / "0" / "0.png").rename(mine / "train" / "0" / "moved.png")  # a rename: the same images
    assert evaluation._run(cfg, out, (), eager, data, test_split=True) == first and (out / "marker").exists()
    _drawn_folder(tmp_path / "more", [13, 12])
    (tmp_path / "more" / "train" / "0" / "12.png").rename(mine / "train" / "0" / "12.png")  # one image more
    again = evaluation._run(cfg, out, (), eager, data, test_split=True)
    assert not (out / "marker").exists() and again["data_digest"] != first["data_digest"]
    assert again["train_class_counts"] != first["train_class_counts"]


def test_the_best_is_compared_with_every_baseline_but_the_ceiling():
    contenders = dict.fromkeys(["best", "start", "plain", "scratch", "start_labelled_only", "oracle", "zero_shot"])
    assert evaluation._compared("plain", contenders) == [
        "zero_shot",
        "start",
        "plain",
        "scratch",
        "start_labelled_only",
    ]
    assert evaluation._compared(None, {"best": 0, "zero_shot": 0}) == ["zero_shot"]
