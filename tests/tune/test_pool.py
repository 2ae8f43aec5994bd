"""hwr.tune.pool and what runs on it: a pool's results equal a serial map's, in job order, errors reach the caller;
the evaluation over several pretrained sources (``StudySpec.eval_sources``) gives the same figures on two
processes as on one, each eval seed fine-tuning its own source."""

import dataclasses
import json
import math
import operator
from pathlib import Path

import optuna
import pytest
from tiny import EAGER, TINY_CNN

from hwr import tune
from hwr.engine.execution import Execution
from hwr.tasks.digits.config import FinetuneConfig, RunConfig
from hwr.tune import evaluation, pool

SMALL = dict(dataset="optdigits", epochs=1, batch_size=32, limit_train=128, limit_test=100, validation="heldout")
SOURCE = RunConfig(model_config=TINY_CNN, recipe="tiny_source", **SMALL)


def test_parallel_map_equals_the_serial_map_in_job_order():
    jobs = [(b, 3) for b in range(7)]
    seen = []
    got = pool.parallel_map(operator.pow, jobs, workers=2, on_done=lambda i, r: seen.append((i, r)))
    assert got == [b**3 for b in range(7)] == pool.parallel_map(operator.pow, jobs, workers=1)
    assert sorted(seen) == list(enumerate(got))


def test_parallel_map_raises_the_first_error_here():
    with pytest.raises(ValueError, match="math domain error"):
        pool.parallel_map(math.sqrt, [(1.0,), (-1.0,), (4.0,)], workers=2)
    assert pool.parallel_map(math.sqrt, [], workers=2) == [] and pool.cores() >= 1


def _spec(**kw) -> tune.StudySpec:
    def suggest(trial: optuna.Trial, ctx: tune.StudyContext) -> RunConfig:
        lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
        return RunConfig(
            model_config=TINY_CNN,
            optim=dataclasses.replace(RunConfig().optim, lr=lr),
            finetune=FinetuneConfig(str(ctx.source_dir), "all"),
            **SMALL,
        )

    return tune.StudySpec(
        "pooled",
        "",
        suggest,
        ("val_macro_f1",),
        ("maximize",),
        2,
        lambda s: optuna.samplers.RandomSampler(s),
        source=SOURCE,
        source_execution=EAGER,
        eval_seeds=(1, 2),
        **kw,
    )


def test_spec_rejects_a_bad_source_count_and_an_unknown_zoo_execution():
    with pytest.raises(tune.StudyError, match="eval_sources"):
        _spec(eval_sources=0)
    with pytest.raises(tune.StudyError, match="zoo_execution names"):
        _spec(zoo_execution={"vit": Execution(compile=False)})
    spec = _spec(zoo={"a": SOURCE}, zoo_execution={"a": Execution(compile=False, device="cpu")})
    assert spec.pretraining("a")[1].compile is False and spec.pretraining()[1] == EAGER
    assert spec.pretrainings() == [(SOURCE, EAGER)]  # the default source and an equal zoo member: once
    assert spec.on_device("meta").zoo_execution["a"].device == "meta"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The same 2-trial study evaluated over 2 pretrained sources with one process and with two."""
    spec = _spec(eval_sources=2)
    out = {}
    for workers in (1, 2):
        root = tmp_path_factory.mktemp(f"w{workers}")
        s = tune.optimize(spec, storage_url=f"sqlite:///{root / 'db.sqlite'}", root=root)
        out[workers] = (root, evaluation.evaluate_best(spec, s, root=root, workers=workers))
    return out


def test_each_eval_seed_fine_tunes_its_own_pretrained_source(evaluated):
    root, r = evaluated[1]
    assert len(r["sources"]) == 2 and r["sources"][0] != r["sources"][1]
    seeds = [json.loads((Path(p) / "config.json").read_text())["seed"] for p in r["sources"]]
    assert seeds[1] == seeds[0] + 1
    for i, s in enumerate((1, 2)):
        cfg = json.loads((root / "studies" / "pooled" / "evaluation" / f"best_seed{s}" / "metrics.json").read_text())
        assert cfg["config"]["finetune"]["source"] == r["sources"][i]
    best = r["contenders"]["best"]
    assert len(best["source_macro_f1_means"]) == 2 and best["source_macro_f1_std"] >= 0
    assert len(r["contenders"]["zero_shot"]["macro_f1"]) == 2


def test_two_processes_give_the_figures_of_one(evaluated):
    (_, one), (_, two) = evaluated[1], evaluated[2]
    assert one["selection"] == two["selection"]
    for label in ("best", "zero_shot"):
        assert one["contenders"][label]["macro_f1"] == two["contenders"][label]["macro_f1"]
