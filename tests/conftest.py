"""Shared test settings: one inductor cache for every test process, the allocator tuned as the CLI does, and the
repository root on ``sys.path`` for ``benchmarks.reference`` (the nn.Module CNN the tests compare against)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "inductor"))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # benchmarks/, no installed package: benchmarks.reference

from hwr.engine import runtime

runtime.tune_allocator()
