"""A rerun soon after a worker's kill -9 (issue 22): the dead worker's RUNNING trial does not count toward the
budget, the study reaches the trials asked, and the budget's end logs no traceback."""

import logging
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tiny import TINY_STUDY

from hwr import tune
from hwr.tune.study import budget_state

pytestmark = pytest.mark.slow


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped: what a kill -9 leaves behind."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _running_trial(url: str, worker: dict) -> int:
    """A RUNNING trial with a fresh heartbeat and its worker recorded, as a killed worker leaves it."""
    spec = tune.load_spec(str(TINY_STUDY))
    store = tune.open_storage(url, heartbeat=1, grace=60)
    study = tune.open_study(spec, store, "tiny", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize": it is by hand
        trial = study.ask()
    trial.suggest_categorical("hidden", [16, 32])
    trial.set_user_attr("worker", {**worker, "trial": trial.number})
    store.record_heartbeat(trial._trial_id)
    return trial.number


def _optimize(url: str, tmp_path: Path, n: int, grace: int) -> optuna.Study:
    spec = tune.load_spec(str(TINY_STUDY))
    return tune.optimize(spec, storage_url=url, n_trials=n, root=tmp_path / "runs", heartbeat=1, grace=grace)


class _Records(logging.Handler):
    """Every record Optuna's loggers emit while the test runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def optuna_log():
    handler = _Records()
    logging.getLogger("optuna").addHandler(handler)
    yield handler.records
    logging.getLogger("optuna").removeHandler(handler)


def _no_traceback(records: list[logging.LogRecord], capsys) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BudgetReached" not in err
    assert not [r for r in records if r.exc_info or "BudgetReached" in r.getMessage()]
    assert not [r for r in records if "failed with value" in r.getMessage()]  # Optuna's second line of a failure


def test_a_dead_workers_running_trial_does_not_take_the_budget(tmp_path, optuna_log, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    dead = _running_trial(url, {"host": socket.gethostname(), "pid": _dead_pid()})
    study = _optimize(url, tmp_path, 2, grace=60)  # well within the grace period: only the pid says it is dead
    ts = study.get_trials(deepcopy=False)
    assert len([t for t in ts if t.state == TrialState.COMPLETE]) == 2
    assert ts[dead].state == TrialState.FAIL
    retried = [t for t in ts if t.system_attrs.get("failed_trial") == dead]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE  # its parameters ran first
    assert ts[dead].params.items() <= retried[0].params.items()  # the hidden size it had drawn
    _no_traceback(optuna_log, capsys)
    counts = tune.study.trial_counts(study)
    assert counts["COMPLETE"] == 2 and counts["FAIL"] == 1


def test_a_running_trial_on_another_host_is_waited_for_until_stale(tmp_path, optuna_log, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    other = _running_trial(url, {"host": "another-machine", "pid": 1})
    study = _optimize(url, tmp_path, 1, grace=2)  # it may be alive: wait until its heartbeat is 2 s stale
    ts = study.get_trials(deepcopy=False)
    assert ts[other].state == TrialState.FAIL
    assert len([t for t in ts if t.state == TrialState.COMPLETE]) == 1
    _no_traceback(optuna_log, capsys)


def test_a_live_workers_last_trial_is_waited_for_and_the_budget_ends_quietly(tmp_path, optuna_log, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        number = _running_trial(url, {"host": socket.gethostname(), "pid": alive.pid})
        store = tune.open_storage(url)
        trial_id = optuna.load_study(study_name="tiny", storage=store).get_trials()[number]._trial_id
        # the live worker finishes its trial while this one waits for it: the budget of 1 is then taken
        threading.Timer(2.0, store.set_trial_state_values, (trial_id, TrialState.COMPLETE, [0.5])).start()
        study = _optimize(url, tmp_path, 1, grace=60)
    finally:
        alive.kill()
        alive.wait()
    ts = study.get_trials(deepcopy=False)
    assert [t.state for t in ts] == [TrialState.COMPLETE, TrialState.FAIL]
    assert ts[1].user_attrs["failure"].startswith("budget") and "config" not in ts[1].user_attrs  # never trained
    _no_traceback(optuna_log, capsys)


def test_budget_state():
    def trial(number: int, state: TrialState) -> optuna.trial.FrozenTrial:
        t = optuna.trial.create_trial(state=state, value=0.0 if state == TrialState.COMPLETE else None)
        t.number = number
        return t

    done, run = TrialState.COMPLETE, TrialState.RUNNING
    assert budget_state([trial(0, done), trial(1, done)], 2, 2) == "taken"
    assert budget_state([trial(0, done), trial(1, run)], 2, 3) == "run"
    assert budget_state([trial(0, done), trial(1, run)], 2, 2) == "wait"
    assert budget_state([trial(0, done), trial(3, run)], 2, 2) == "run"  # a later-numbered trial waits on this one
