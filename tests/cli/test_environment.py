"""hwr.cli.environment: the one reader of the environment (HWR_DATA, HWR_OFFLINE, HWR_THREADS, HWR_NO_MALLOPT,
TORCHINDUCTOR_CACHE_DIR, HWR_SQLITE_TIMEOUT), its defaults, its errors, and ``start`` in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwr.cli import environment
from hwr.config import DataSettings
from hwr.errors import InputError


def test_defaults():
    env = environment.read({})
    assert env.threads == 0 and env.malloc and env.sqlite_timeout == 60.0
    assert env.data.network


def test_every_variable_reaches_its_setting(tmp_path):
    env = environment.read(
        {
            "HWR_DATA": str(tmp_path / "d"),
            "HWR_OFFLINE": "1",
            "HWR_THREADS": "3",
            "HWR_NO_MALLOPT": "1",
            "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ic"),
            "HWR_SQLITE_TIMEOUT": "2.5",
        }
    )
    assert env.data == DataSettings(tmp_path / "d", network=False)
    assert (env.threads, env.malloc, env.inductor_cache, env.sqlite_timeout) == (3, False, tmp_path / "ic", 2.5)


def test_home_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    env = environment.read({})
    assert env.data.root == tmp_path / ".cache" / "hwr"
    assert env.inductor_cache == tmp_path / ".cache" / "hwr" / "inductor"


def test_a_bad_number_names_the_variable():
    with pytest.raises(InputError, match="HWR_THREADS must be a number"):
        environment.read({"HWR_THREADS": "many"})
    with pytest.raises(InputError, match="HWR_SQLITE_TIMEOUT"):
        environment.read({"HWR_SQLITE_TIMEOUT": "soon"})


def test_start_in_a_fresh_process(tmp_path):
    probe = (
        "import os, torch; from hwr.cli import environment; environment.start(); "
        "print(os.environ['TORCHINDUCTOR_CACHE_DIR'], torch.get_num_threads())"
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ic"), "HWR_THREADS": "1", "HWR_NO_MALLOPT": "1"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(tmp_path / "ic"), "1"]


def test_the_library_reads_no_environment():
    """Only hwr/cli reads os.environ (docs/architecture.md, rule 4); hwr.engine.runtime only writes the cache
    variable at process start."""
    root = Path(__file__).resolve().parents[2] / "hwr"
    readers = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "cli" not in p.relative_to(root).parts
        and any(
            s in p.read_text()
            for s in ("os.environ.get", "os.getenv", "in os.environ", "environ.get(", "dict(os.environ")
        )
    ]
    assert readers == []


def test_columns_sets_the_width_of_tables_on_and_off_a_terminal():
    from cli_run import hwr

    widest = lambda out: max(len(line) for line in out.splitlines())
    assert widest(hwr("data", "list", env={"COLUMNS": None}).stdout) > 100  # off a terminal: the natural width
    assert widest(hwr("data", "list", env={"COLUMNS": "60"}).stdout) <= 60
    assert environment.read({"COLUMNS": "80"}).columns == 80
    assert environment.read({"COLUMNS": "x"}).columns is None and environment.read({}).columns is None


def test_library_warnings_are_hidden_and_hwrs_own_are_shown():

    code = (
        "import warnings, optuna\n"
        "from hwr.cli import environment\n"
        "environment.quiet_library_warnings()\n"
        "warnings.warn_explicit('a library note', UserWarning, '/x/site-packages/optuna/a.py', 1)\n"
        "warnings.warn('experimental', optuna.exceptions.ExperimentalWarning)\n"
        "warnings.warn('an hwr notice', UserWarning)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "an hwr notice" in p.stderr
    assert "a library note" not in p.stderr and "experimental" not in p.stderr
