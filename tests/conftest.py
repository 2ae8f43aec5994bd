"""Shared test settings: one inductor cache for every test process, the process started as the CLI starts it
(``hwr.cli.environment.start``: the allocator tuned, the cache exported; one thread per process under
pytest-xdist, which ``make test`` uses: one worker per core, whole files to a worker so module fixtures compile once), the tests folder on ``sys.path`` for the
helper modules (``cli_run``, ``postgres``, ``tiny``), the repository root for ``benchmarks.reference``, the longest
files first (``LONGEST_FIRST``), and the ``cuda`` marker: a test marked ``@pytest.mark.cuda`` is skipped, saying why, where torch sees no CUDA GPU."""

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(TESTS.parent / ".cache" / "inductor"))
if "PYTEST_XDIST_WORKER" in os.environ:  # `make test` runs one worker per core: one thread each, and the CLI
    os.environ.setdefault("HWR_THREADS", "1")  # processes the tests start inherit it (no oversubscription)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path[:0] = [str(TESTS)]  # helper modules: cli_run, postgres, tiny, tiny_study
sys.path.append(str(TESTS.parent))  # benchmarks/ (no installed package): benchmarks.reference

from hwr.cli import environment  # noqa: E402

environment.start()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped where torch sees none)")


# The files that train, compile or start processes for 10 s or more, longest first (cold, 2 workers: the spans of
# each file in one `make test`, 2026-12-06). They are collected first and `make test` passes
# --no-loadscope-reorder, so pytest-xdist hands them out first (whole files, in collection order: longest
# processing time first) and the short files fill in around them: no worker is left running a long file at the
# end while the other idles (with the list cut at 9 files, the last 51-s file started at 520 s on one worker and
# the other idled 36 s). A file missing here only runs later; the order changes no result.
LONGEST_FIRST = (
    "tests/cli/test_cli.py",
    "tests/test_benchmarks.py",
    "tests/cli/test_strings.py",
    "tests/tune/test_study.py",
    "tests/tasks/strings/test_training.py",
    "tests/tune/test_study_cli.py",
    "tests/models/test_contract.py",
    "tests/tune/test_trial_compiles.py",
    "tests/interop/jax/test_families.py",
    "tests/tasks/digits/test_lockstep.py",
    "tests/engine/test_autotune.py",
    "tests/engine/test_execution.py",
    "tests/interop/jax/test_train.py",
    "tests/cli/test_robust_runs.py",
    "tests/engine/test_train.py",
    "tests/tune/test_pool.py",
    "tests/test_export.py",
    "tests/test_time_to_accuracy.py",
    "tests/test_source_transfer.py",
    "tests/cli/test_calibrate.py",
    "tests/engine/test_stacked.py",
    "tests/data/test_augment.py",
    "tests/tune/test_evaluation.py",
    "tests/test_random.py",
    "tests/serve/test_page.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
