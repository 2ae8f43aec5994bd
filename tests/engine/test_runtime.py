"""hwr.engine.runtime: the allocator switch (checked in fresh processes, since mallopt is process-wide), the
inductor cache, configure, and the CUDA_HOME warning filter. The environment that feeds them is read by
``hwr.cli.environment`` (tests/cli/test_environment.py)."""

import os
import platform
import subprocess
import sys

import pytest

from hwr.engine import runtime

_PROBE = "from hwr.engine import runtime; print(runtime.tune_allocator())"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_allocator_applies_on_glibc():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_inductor_cache_is_torchs_own_answer(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "c"))
    assert runtime.inductor_cache_path() == tmp_path / "c"


def test_set_inductor_cache_exports_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "elsewhere")
    assert runtime.set_inductor_cache(tmp_path / "x") == tmp_path / "x"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "x")  # exported, so child processes inherit it
    assert runtime.inductor_cache_path() == tmp_path / "x"


def test_configure_applies_what_it_is_given(monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "elsewhere")
    before = torch.get_num_threads()
    try:
        runtime.configure(threads=1, malloc=False, inductor_cache=tmp_path / "ic")
        assert torch.get_num_threads() == 1
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "ic")
    finally:
        torch.set_num_threads(before)


def test_the_cuda_home_warning_alone_is_silenced():
    import logging

    runtime.quiet_cuda_home_warning()
    runtime.quiet_cuda_home_warning()  # idempotent: one filter
    log = logging.getLogger("torch.utils.cpp_extension")
    assert len(log.filters) == 1
    make = lambda msg: logging.LogRecord(log.name, logging.WARNING, __file__, 1, msg, (), None)
    assert not log.filters[0].filter(make("No CUDA runtime is found, using CUDA_HOME='/usr/local'"))
    assert log.filters[0].filter(make("something else"))
