"""How a study's runs should use the cores: one fine-tune of the default study on all threads, on one thread,
and ``cores`` of them at once on one thread each (what ``--workers`` does), in one run, as wall seconds and the
throughput ratio of the parallel form to the one-process form.

    python benchmarks/study_threads.py [--epochs 8] [--root runs]

The run is the plain fine-tune of ``optdigits_longtail`` (all layers, AdamW, eager steps of 32) from the study's
default source (pretrained once and cached under ROOT/pretrained). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from hwr.cli import environment
from hwr.config import to_dict
from hwr.tasks.digits.config import RunConfig
from hwr.tune import StudyContext, load_spec, pool, prepare_source

__all__ = ["main"]

CHILD = """
import json, sys, tempfile, time
from hwr.cli import environment
from hwr.config import from_dict
from hwr.engine.execution import Execution
from hwr.tasks import digits
from hwr.tasks.digits.config import RunConfig
env = environment.start()
cfg = from_dict(RunConfig, json.loads(sys.argv[1]))
t = time.perf_counter()
digits.run(cfg, tempfile.mkdtemp(), execution=Execution(compile=False), data=env.data, write_figures=False,
           test_split=False)
print(time.perf_counter() - t)
"""


def _config(root: Path, epochs: int) -> RunConfig:
    """The default study's plain fine-tune from its cached source, ``epochs`` long."""
    spec = load_spec("optdigits_longtail")
    source = prepare_source(spec, root, data=environment.read().data)
    cfg = spec.baselines(StudyContext(source, Path(tempfile.mkdtemp())))["plain_finetune"]
    return dataclasses.replace(spec.protocol(cfg), epochs=epochs)


def _timed(cfg_json: str, threads: int, copies: int) -> list[float]:
    """Wall seconds of ``copies`` fine-tunes started at once, each a process of ``threads`` threads."""
    env = {**os.environ, "HWR_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-c", CHILD, cfg_json]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(copies)]
    return [float(p.communicate()[0].split()[-1]) for p in procs]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--root", default="runs")
    args = ap.parse_args(argv)
    environment.start()
    cfg_json = json.dumps(to_dict(_config(Path(args.root), args.epochs)))
    n = pool.cores()
    t0 = time.perf_counter()
    all_threads = _timed(cfg_json, n, 1)[0]
    one_thread = _timed(cfg_json, 1, 1)[0]
    parallel = _timed(cfg_json, 1, n)
    out = {
        "cores": n,
        "seconds_all_threads": all_threads,
        "seconds_one_thread": one_thread,
        "seconds_each_parallel": parallel,
        "throughput_parallel_vs_all_threads": n * all_threads / max(parallel),
        "wall": time.perf_counter() - t0,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
