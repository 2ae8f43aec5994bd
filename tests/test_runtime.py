"""hwr.engine.runtime: the allocator switch (checked in fresh processes, since mallopt is process-wide) and the cache dir."""

import os
import platform
import subprocess
import sys

import pytest

from hwr.engine import runtime

_PROBE = "from hwr.engine import runtime; print(runtime.tune_allocator())"


def _probe(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HWR_NO_MALLOPT"} | env_extra
    return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_allocator_applies_on_glibc():
    assert _probe({}).strip() == "True"


def test_tune_allocator_respects_opt_out():
    assert _probe({"HWR_NO_MALLOPT": "1"}).strip() == "False"


def test_inductor_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "c"))
    assert runtime.inductor_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    path = runtime.inductor_cache_dir()
    assert path == tmp_path / ".cache" / "hwr" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(path)  # exported, so child processes inherit it


def test_configure_sets_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HWR_NO_MALLOPT", "1")  # leave this process's allocator as conftest set it
    runtime.configure()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / ".cache" / "hwr" / "inductor")


def test_the_cuda_home_warning_alone_is_silenced():
    import logging

    from hwr.engine import runtime

    runtime.quiet_cuda_home_warning()
    runtime.quiet_cuda_home_warning()  # idempotent: one filter
    log = logging.getLogger("torch.utils.cpp_extension")
    assert len(log.filters) == 1
    make = lambda msg: logging.LogRecord(log.name, logging.WARNING, __file__, 1, msg, (), None)
    assert not log.filters[0].filter(make("No CUDA runtime is found, using CUDA_HOME='/usr/local'"))
    assert log.filters[0].filter(make("something else"))


def test_tables_keep_their_natural_width_off_a_terminal():
    import subprocess
    import sys

    code = (
        "from rich.table import Table; from hwr import report; t = Table(); "
        "[t.add_column(c) for c in ('state', 'a long column header', 'value')]; "
        "t.add_row('COMPLETE', 'x' * 60, '0.987654321'); report.console.print(t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "COMPLETE" in out and "0.987654321" in out and "…" not in out  # piped: nothing squeezed
