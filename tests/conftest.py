"""Shared test settings: one inductor cache for every test process, the allocator tuned as the CLI does."""

import os
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "inductor"))

from hwr import runtime

runtime.tune_allocator()
