"""Studies end to end through the CLI, on SQLite and on a real PostgreSQL server: budget exactness with two
workers, kill -9 of a worker mid-trial, NaN trials, bad specs and unreachable or locked storages."""

import contextlib
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import postgres
import pytest
from cli_run import hwr
from optuna.trial import TrialState
from tiny import TINY_STUDY

from hwr import tune
from hwr.config import to_dict

TINY = str(TINY_STUDY)
pytestmark = pytest.mark.slow


def trials(url, name="tiny"):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def finished(ts):
    return [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.fixture(scope="module")
def pg_url():
    reason = postgres.available()
    if reason:
        pytest.fail(reason)  # CI installs it: a missing server is a broken setup, not a skip
    with postgres.server() as url:
        yield url


def test_spec_errors(tmp_path):
    with pytest.raises(tune.StudyError, match="unknown study"):
        tune.load_spec("no_such_study")
    bad = tmp_path / "bad.py"
    bad.write_text("X = 1\n")
    with pytest.raises(tune.StudyError, match="must define SPEC"):
        tune.load_spec(str(bad))
    with pytest.raises(tune.StudyError, match="directions"):
        tune.StudySpec("x", "", lambda t, c: None, ("val_macro_f1",), ("up",), 3, lambda s: None)
    with pytest.raises(tune.StudyError, match="unknown metric"):
        tune.StudySpec("x", "", lambda t, c: None, ("loss",), ("minimize",), 3, lambda s: None)
    p = hwr("study", "run", str(bad), check=False)
    assert p.returncode == 2 and "must define SPEC" in p.stderr and "Traceback" not in p.stderr


def test_default_specs_load():
    assert tune.load_spec("optdigits_longtail").metrics == ("val_macro_f1",)
    assert tune.load_spec("mnist_architecture").directions == ("maximize", "minimize")


def test_unreachable_and_locked_storage(tmp_path):
    p = hwr("study", "run", TINY, "--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/none", check=False)
    assert p.returncode == 2 and "cannot open study storage" in p.stderr and "Traceback" not in p.stderr
    db = tmp_path / "locked.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x)")
    con.execute("begin exclusive")
    p = hwr("study", "run", TINY, "--storage", f"sqlite:///{db}", env={"HWR_SQLITE_TIMEOUT": "1"}, check=False)
    con.rollback()
    assert p.returncode == 2 and "locked" in p.stderr and "Traceback" not in p.stderr


def test_sqlite_timeout_is_an_argument(tmp_path):
    db = tmp_path / "locked.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x)")
    con.execute("begin exclusive")
    t0 = time.perf_counter()
    with pytest.raises(tune.StudyError, match="locked"):
        tune.open_storage(f"sqlite:///{db}", sqlite_timeout=0.5)
    con.rollback()
    assert time.perf_counter() - t0 < 30  # the default (60 s) was not used


def test_plain_postgresql_url_opens_with_the_installed_driver(pg_url):
    plain = pg_url.replace("postgresql+psycopg2://", "postgresql://")  # what most people type
    if importlib.util.find_spec("psycopg") is None:  # SQLAlchemy 2.1 reads the plain scheme as psycopg 3
        assert tune.with_installed_driver(plain) == pg_url
    s = optuna.create_study(study_name="plain-url", storage=tune.open_storage(plain), load_if_exists=True)
    s.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    assert len(optuna.load_study(study_name="plain-url", storage=pg_url).trials) == 1


def test_missing_driver_error_names_the_cause():
    assert tune.with_installed_driver("sqlite:///x.db") == "sqlite:///x.db"
    assert tune.with_installed_driver("postgresql+pg8000://u@h/db") == "postgresql+pg8000://u@h/db"
    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed here")
    with pytest.raises(tune.StudyError) as e:
        tune.open_storage("postgresql+pg8000://u:secret@127.0.0.1:1/db")
    msg = str(e.value)
    assert "PostgreSQL driver 'pg8000'" in msg and "not installed" in msg and "pip install pg8000" in msg
    assert "secret" not in msg
    if importlib.util.find_spec("psycopg2") is not None:
        assert "installed: psycopg2" in msg and "postgresql+psycopg2://" in msg


def test_no_warning_filter_at_import_and_none_left_behind(tmp_path):
    probe = (
        "import warnings, optuna, hwr.tune.study; "
        "print(any(f[2] is optuna.exceptions.ExperimentalWarning for f in warnings.filters))"
    )
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
    import warnings

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tune.open_storage(f"sqlite:///{tmp_path}/w.db")  # heartbeats and stale-trial retry: experimental in Optuna
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert warnings.filters == before


def test_sqlite_run_resume_nan_show_plot_best(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    common = ["--storage", url, "--root", str(tmp_path / "runs")]
    hwr("study", "run", TINY, *common, "--n-trials", "3", env={"HWR_TINY_NAN_TRIAL": "1"})
    ts = trials(url)
    assert len(finished(ts)) == 3
    nan_trial = ts[1]
    assert nan_trial.state == TrialState.PRUNED and "non-finite" in nan_trial.user_attrs["failure"]
    # rerunning the same command with a larger budget resumes: old trials kept, new ones added
    hwr("study", "run", TINY, *common, "--n-trials", "4", fresh=True)  # the console script
    ts2 = trials(url)
    assert len(finished(ts2)) == 4 and [t.number for t in ts2[:3]] == [0, 1, 2]
    assert ts2[0].values == ts[0].values
    run_dir = Path(ts2[0].user_attrs["run_dir"])
    assert (run_dir / "config.json").is_file() and (run_dir / "metrics.json").is_file()

    out = hwr("study", "show", "tiny", *common).stdout
    assert "best trial" in out and "COMPLETE" in out
    plots = tmp_path / "plots"
    best = hwr("study", "best", "tiny", *common, "--evaluate").stdout
    assert "plain_finetune" in best and "macro-F1" in best
    assert "after re-running" not in best  # the tiny spec re-runs nothing (rerun_top=1): no selection line
    hwr("study", "plot", "tiny", *common, "--out", str(plots))
    assert {"history.png", "per_class_f1.png"} <= {p.name for p in plots.iterdir()}
    ev = (tmp_path / "runs" / "studies" / "tiny" / "evaluation.json").read_text()
    assert '"gain_macro_f1_vs_plain_finetune"' in ev


def test_postgres_two_workers_exact_budget(tmp_path, pg_url):
    hwr(
        "study",
        "run",
        TINY,
        "--storage",
        pg_url,
        "--root",
        str(tmp_path),
        "--workers",
        "2",
        "--n-trials",
        "5",
        "--name",
        "two",
    )
    ts = trials(pg_url, "two")
    done = finished(ts)
    assert len(done) == 5
    assert len({t.number for t in done}) == 5
    # any extra trial a racing worker opened ended as FAIL with the budget reason, not as a result
    assert all("budget" in t.user_attrs.get("failure", "") for t in ts if t.state == TrialState.FAIL)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_worker_mid_trial_then_resume(tmp_path, backend, request):
    url = f"sqlite:///{tmp_path}/k.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    name = f"kill_{backend}"
    args = [
        "study",
        "run",
        TINY,
        "--storage",
        url,
        "--root",
        str(tmp_path),
        "--n-trials",
        "3",
        "--name",
        name,
        "--heartbeat",
        "1",
        "--grace",
        "3",
    ]
    env = {**os.environ, "HWR_TINY_EPOCHS": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwr.cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 180
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.5)
        with contextlib.suppress(KeyError):
            running = [t for t in trials(url, name) if t.state == TrialState.RUNNING and t.intermediate_values]
    assert running, "no trial reached its first epoch in time"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    dead = running[0].number
    time.sleep(4)  # past the grace period: the dead trial's heartbeat is stale
    hwr(*args, env={"HWR_TINY_EPOCHS": "2"})
    ts = trials(url, name)
    assert ts[dead].state == TrialState.FAIL
    retried = [t for t in ts if t.system_attrs.get("failed_trial") == dead]
    assert len(retried) == 1 and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retried[0].params == ts[dead].params
    done = finished(ts)
    assert len(done) == 3 and len({t.number for t in done}) == 3


def _zoo_context(spec, tmp_path):
    """A StudyContext whose zoo folders hold only config.json (what ``suggest`` reads of a source)."""
    sources = {}
    for name, cfg in {"default": spec.source, **spec.zoo}.items():
        if cfg is not None:
            (tmp_path / name).mkdir()
            (tmp_path / name / "config.json").write_text(json.dumps(to_dict(cfg)))
            sources[name] = tmp_path / name
    return tune.StudyContext(sources.pop("default", tmp_path / "source"), tmp_path, sources=sources)


@pytest.mark.parametrize("name", ["optdigits_longtail", "mnist_architecture"])
def test_search_spaces_build_valid_configs(name, tmp_path):
    from hwr import models

    spec = tune.load_spec(name)
    s = optuna.create_study(directions=list(spec.directions), sampler=optuna.samplers.RandomSampler(0))
    families = set()
    ctx = _zoo_context(spec, tmp_path)
    for _ in range(15):
        cfg = spec.suggest(s.ask(), ctx)
        model = models.get(cfg.model, cfg.model_config)  # the config is valid for its family
        families.add(model.name)
        assert "test" not in cfg.dataset and "compile" not in to_dict(cfg)  # execution is not in the config
    assert spec.execution.compile is False  # trials run eagerly: each new configuration would pay a compile
    if name == "mnist_architecture":
        assert families == {"cnn", "rnn", "vit"}


def test_pruner_choice_reaches_the_study_and_unknown_names_are_refused():
    spec = tune.load_spec("optdigits_longtail")
    assert isinstance(spec.pruner(), optuna.pruners.SuccessiveHalvingPruner)  # the default study's own
    median = spec.with_pruner("median")
    assert isinstance(median.pruner(), optuna.pruners.MedianPruner) and median.zoo == spec.zoo
    halving = median.with_pruner("halving")
    assert spec.with_pruner("none").pruner is None and spec.with_pruner(None) is spec
    study = tune.open_study(halving, optuna.storages.InMemoryStorage(), "h", 0)
    assert isinstance(study.pruner, optuna.pruners.SuccessiveHalvingPruner)
    with pytest.raises(tune.StudyError, match="unknown pruner 'asha'; choose one of"):
        spec.with_pruner("asha")
