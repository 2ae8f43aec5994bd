"""benchmarks/step.py end to end on a tiny CNN: the JSON rows it writes, and its refusal of unknown variants.

No wall-clock thresholds: the figures depend on the machine and its load; only their shape and consistency are tested.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import python
from tiny import TINY_CNN

ROOT = Path(__file__).resolve().parents[1]
STEP = ROOT / "benchmarks" / "step.py"
RECIPE_STEP = ROOT / "benchmarks" / "recipe_step.py"
TINY = '{"channels": [4, 8], "hidden": 16}'


def _load_step_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_step", STEP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


step_mod = _load_step_module()


def _run(*args: str) -> subprocess.CompletedProcess:
    return python(str(STEP), *args, cwd=ROOT, timeout=900)  # in a child of the zygote (cli_run)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "step.json"
    done = _run(
        "--quick",
        "--json",
        str(out),
        "--variants",
        "eager_module,hwr_compiled",
        "--batch-sizes",
        "8",
        "--windows",
        "2",
        "--steps",
        "2",
        "--config",
        TINY,
        "--peak-gflops",
        "100",
        "--candidates",  # one compile: every candidate compiled and timed is tests/engine/test_autotune.py's
        "channels_last+aten",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hwr_compiled" in done.stdout  # the rich table
    return json.loads(out.read_text())


def test_rows_have_the_documented_schema(rows):
    assert [r["variant"] for r in rows] == ["eager_module", "hwr_compiled"]
    for r in rows:
        assert r["batch_size"] == 8 and r["members"] == 1
        assert isinstance(r["samples_per_s"], float) and r["samples_per_s"] > 0
        assert len(r["windows_samples_per_s"]) == 2
        assert r["samples_per_s"] == pytest.approx(
            sorted(r["windows_samples_per_s"])[0] / 2 + sorted(r["windows_samples_per_s"])[1] / 2
        )
        assert r["env"]["peak_gflops"] == 100 and r["env"]["peak_source"] == "given"
        assert r["config"] == json.loads(TINY)
        assert r["env"]["flops_per_sample"] > 0
        assert math.isclose(r["gflops"], r["samples_per_s"] * r["env"]["flops_per_sample"] / 1e9)
        assert math.isclose(r["fraction_of_fp32_peak"], r["gflops"] / 100)


def test_rows_say_where_they_ran_and_what_autotune_chose(rows):
    ref, hwr = rows
    for r in rows:
        assert r["env"]["device"] == "cpu" and r["env"]["tf32"] is False and r["gpu_max_allocated_mib"] is None
    assert ref["autotune"] is None
    chosen = hwr["autotune"]
    assert chosen["candidate"] == "channels_last+aten" and chosen["rejected"] == {}
    assert set(chosen["seconds_per_step"]) == {"channels_last+aten"}  # the candidates named, and only those
    assert hwr["env"]["candidates"] == ["channels_last+aten"]  # and the rows say they were limited


def test_unknown_compile_candidates_are_refused():
    import torch

    assert step_mod._unknown_candidates(None, torch.device("cpu")) is None
    assert step_mod._unknown_candidates(("inductor", "channels_last+aten"), torch.device("cpu")) is None
    msg = step_mod._unknown_candidates(("inductor", "cudagraphs"), torch.device("cpu"))
    assert "['cudagraphs'] on cpu" in msg and "channels_last+inductor" in msg
    assert step_mod._unknown_candidates(("cudagraphs",), torch.device("cuda")) is None


def test_cuda_is_refused_where_there_is_none():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    done = _run("--device", "cuda", "--quick", "--config", TINY)
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr


def test_ratios_are_against_eager_module(rows):
    ref, hwr = rows
    assert ref["ratio_vs_reference"] == 1.0
    assert math.isclose(hwr["ratio_vs_reference"], hwr["samples_per_s"] / ref["samples_per_s"])


def test_compile_columns_only_for_compiled_variants(rows):
    ref, hwr = rows
    assert ref["compile_first_s"] is None and ref["compile_warm_s"] is None
    assert hwr["compile_first_s"] >= 0 and hwr["compile_warm_s"] >= 0
    assert hwr["compile_cache"] in ("cold", "warm", "-")


def test_unknown_variant_is_refused():
    done = _run("--variants", "eager_module,warp_drive", "--config", TINY)
    assert done.returncode == 2
    assert "warp_drive" in done.stderr and "hwr_compiled" in done.stderr


def test_flops_count_the_seed_cnn():
    """The FLOP counter on the seed CNN: forward MACs * 2, backward about twice that (no input grad for conv1)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import step
    finally:
        sys.path.pop(0)
    from hwr import random
    from hwr.models import cnn

    cfg = cnn.CNNConfig()
    fwd_macs = 32 * 9 * 784 + 64 * 32 * 9 * 196 + 3136 * 128 + 128 * 10  # per sample
    flops = step.flops_per_sample(cfg, cnn.model(cfg).init(random.key(0)))
    # forward 2*MACs; backward: weight grads for every layer, input grads for all but the first conv
    expected = 2 * fwd_macs + 2 * fwd_macs + 2 * (fwd_macs - 32 * 9 * 784)
    assert flops == pytest.approx(expected, rel=1e-6)


def _tiny_step(*, fuse: bool = False):
    from hwr import losses, optim, random
    from hwr.engine import perf, train
    from hwr.models import cnn

    model = perf.channels_last(cnn.model(TINY_CNN))
    opt = optim.adam(1e-3)
    opt = step_mod._inductor_region(opt) if fuse else opt
    state = train.init_state(model, opt, random.key(0))
    return train.train_step(model, opt, losses.cross_entropy), state


def test_donating_step_writes_the_new_state_into_the_old_buffers():
    import torch

    from hwr import random, tree
    from hwr.data import batches

    step, state = _tiny_step()
    batch = batches.synthetic_batches(random.key(1), 1, 8)[0]
    want, _ = step(state, batch)
    old = tree.map(torch.clone, state)
    got, _ = step_mod._donating(step)(state, batch)
    for a, b in zip(tree.leaves(got.params), tree.leaves(want.params), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(a is b for a, b in zip(tree.leaves(got.params), tree.leaves(state.params), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(tree.leaves(state.params), tree.leaves(old.params), strict=True))


def test_inductor_region_adam_equals_plain_adam_in_an_aten_graph_step():
    import torch

    from hwr import random, tree
    from hwr.data import batches
    from hwr.engine import perf, train

    batch = batches.synthetic_batches(random.key(1), 1, 8)[0]
    plain, state = _tiny_step()
    fused, _ = _tiny_step(fuse=True)
    want, _ = plain(state, batch)
    got, _ = train.compile(fused, **perf.ATEN_GRAPH)(state, batch)
    for a, b in zip(tree.leaves(got.params), tree.leaves(want.params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_recipe_step_times_each_memory_format(tmp_path):
    out = tmp_path / "recipe.json"
    done = python(
        str(RECIPE_STEP),
        "--recipe",
        "seed",
        "--windows",
        "2",
        "--steps",
        "2",
        "--limit-train",
        "2000",
        "--json",
        str(out),
        cwd=ROOT,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["memory_format"] for r in rows] == ["contiguous", "channels_last"]
    assert rows[0]["ratio"] == 1.0 and all(r["samples_per_s"] > 0 and r["compile_s"] > 0 for r in rows)


def test_eager_pool_benchmark_checks_bitwise_then_times_both_pools(tmp_path):
    """benchmarks/eager_pool.py --quick: the pool alone and the seed CNN's eager step, each pair checked equal to
    the bit before any window is timed, both timed, JSON rows written."""
    out = tmp_path / "pool.json"
    done = python(
        str(ROOT / "benchmarks" / "eager_pool.py"),
        "--quick",
        "--json",
        str(out),
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bitwise: values, gradients and steps equal" in done.stdout
    rows = json.loads(out.read_text())
    assert [r["what"] for r in rows] == ["pool", "pool", "eager train step"]
    timed = [r.get("with_backward_ms") or r["step_ms"] for r in rows] + [r["no_grad_ms"] for r in rows[:2]]
    assert all(set(t) == {"F.max_pool2d", "hwr.nn.max_pool2d"} and min(t.values()) > 0 for t in timed)


def test_recipe_step_refuses_an_unknown_memory_format():
    done = python(str(RECIPE_STEP), "--formats", "nhwc", cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "unknown memory format" in done.stderr


def test_gpu_check_script_rehearses_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh with DEVICE=cpu SMOKE=1: every stage runs its CPU path in seconds and writes JSON
    (eager steps: step.py's compiled rows and compiled runs are tested on their own, in this file and in
    tests/cli/test_cli.py)."""
    out = tmp_path / "check"
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "SMOKE": "1",
        "PYTHON": sys.executable,
        "STAGES": "tests step tta vmap strings",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert set(status) == {"tests", "step", "tta", "vmap", "strings"} and all(s["exit"] == 0 for s in status.values())
    assert json.loads((out / "env.json").read_text())["device"] == "cpu"
    assert json.loads((out / "tests.json").read_text())["counts"]["passed"] >= 1
    step = json.loads((out / "step.json").read_text())
    assert [r["variant"] for r in step] == ["eager_module", "hwr_eager"] and step[0]["env"]["device"] == "cpu"
    (tta,) = json.loads((out / "time_to_accuracy.json").read_text())
    assert tta["device"] == "cpu" and tta["smoke"] and 0.0 <= tta["test_accuracy"] <= 1.0
    vmap = json.loads((out / "vmap_trials.json").read_text())
    assert [(r["mode"], r["trials"]) for r in vmap] == [("eager", 1), ("eager", 2)]
    assert all(r["vmapped_trial_steps_per_s"] > 0 and r["separate_trial_steps_per_s"] > 0 for r in vmap)
    strings = json.loads((out / "strings.json").read_text())
    assert (
        strings["task"] == "strings"
        and strings["execution"]["device"] == "cpu"
        and 0.0 <= strings["test"]["cer"] <= 1.0
    )


def test_strings_baseline_score_counts_edits_by_length():
    """benchmarks/strings_baseline.score: readings against padded targets, CER and exact matches by length."""
    import importlib.util

    import torch

    from hwr.data import strings as ds

    spec = importlib.util.spec_from_file_location("bench_strings", ROOT / "benchmarks" / "strings_baseline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    test = ds.Strings(
        torch.zeros(3, 1, 8, 8, dtype=torch.uint8),
        torch.tensor([[1, 2, -1], [4, -1, -1], [5, 6, 7]]),
        torch.tensor([2, 1, 3]),
        torch.tensor([8, 8, 8]),
        torch.zeros(3, 3, dtype=torch.int64),
    )
    s = module.score([[1, 2], [3, 3], [5, 7]], test)  # exact; a substitution + an insertion; a deletion
    assert s["count"] == 3 and s["chars"] == 6
    assert math.isclose(s["cer"], 3 / 6) and math.isclose(s["string_accuracy"], 1 / 3)
    assert [(r["length"], r["string_accuracy"]) for r in s["by_length"]] == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert module.score([[], [], []], test)["cer"] == 1.0


def test_constrained_benchmark_decodes_every_way(tmp_path_factory):
    """benchmarks/constrained.py on the tiny trained strings run: a row per decoding, and the constrained decoders
    read strings of the length asked for only."""
    import argparse

    import torch
    from tiny_runs import shared_run

    from benchmarks import constrained
    from hwr.cli import environment
    from hwr.tasks import strings as sr

    run = shared_run(tmp_path_factory, "string")
    out = constrained.main(["--run", str(run), "--length", "3", "--n", "30", "--beam", "4"])
    names = ["greedy", "beam 4", "--length 3 (beam 4)", "--pattern '\\d{3}' (beam 4)"]
    assert out["n"] == 10 and list(out["rows"]) == names
    for row in out["rows"].values():
        assert 0.0 <= row["string_accuracy"] <= 1.0 and [b["length"] for b in row["by_length"]] == [3]
    model, params, state, meta = sr.load_run(run)
    args = argparse.Namespace(length=3, format=None, pattern=None, n=30, beam=4, data_root=environment.read().data.root)
    test = constrained.test_strings(str(run), sr.read_config(run), args, torch.device("cpu"))
    logits, frames = constrained.logits_of(model, params, state, meta, test)
    for name, read in constrained.decoders("0123456789", args, model.config.blank).items():
        if "3" in name:
            assert (read(logits, frames).lengths == 3).all(), name


def test_photo_strings_read_every_condition_of_the_same_string(tmp_path_factory):
    """benchmarks/photo_strings.py on the tiny trained strings run: string k of every condition is the control's
    string k (its digits in the name, its glyph the same), a row per condition asked for (``--only``) with CER,
    exact strings and the misread ones, and a folder with no run is refused naming the command that makes one.
    (Three conditions: a file takes about a second to render and another to read.)"""
    from tiny_runs import shared_run

    from benchmarks import photo_strings as ps

    tmp = tmp_path_factory.mktemp("photo-strings")
    text, glyph = ps.string_glyph(0, 7)
    files = ps.render(tmp, 1, 7, only=["clean", "thumb", "EXIF"])
    assert [f[0] for f in files] == ["control (clean PNG)", "thumb at the edge", "EXIF rotated 90"]
    assert {(f[1].stem, f[2]) for f in files} == {(f"000_{text}", text)} and 3 <= len(text) <= 7
    assert not set(ps.SINGLE_DIGIT_ONLY) & set(ps.CONDITIONS) and glyph.max() > 0.9
    run = shared_run(tmp_path_factory, "string")
    out = ps.main(["--model", str(run), "--n", "1", "--only", "clean", "thumb", "--json", str(tmp / "r.json")])
    assert list(out["conditions"]) == ["control (clean PNG)", "thumb at the edge"]
    for row in out["conditions"].values():
        assert row["files"] == 1 and 0.0 <= row["exact"] <= 1.0 and row["cer"] >= 0.0
        assert len(row["misread"]) == round(1 - row["exact"])
    assert json.loads((tmp / "r.json").read_text())["n"] == 1
    with pytest.raises(SystemExit, match="hwr train --recipe strings"):
        ps.main(["--model", str(tmp / "nothing")])


def _peer_losses(name: str, steps: int = 4) -> list[float]:
    from hwr import random
    from hwr.data import batches
    from hwr.models import cnn

    params = cnn.model(TINY_CNN).init(random.key(0))
    pool = batches.synthetic_batches(random.key(1), 2, 8)
    runner = step_mod._variants(TINY_CNN)[name](params, pool)
    return [float(runner.step(i)) for i in range(steps)]


@pytest.mark.parametrize(
    "name",
    ["eager_module_channels_last", "eager_module_channels_last_foreach", "eager_module_channels_last_fused"],
)
def test_every_module_peer_trains_the_same_model(name):
    """Each peer is the same training run laid out or stepped another way: its losses (three updates in) match the
    NCHW eager module's."""
    want = _peer_losses("eager_module")
    assert want[-1] != want[0]
    assert _peer_losses(name) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_the_compiled_module_step_and_bf16_peers_train_the_same_model():
    want = _peer_losses("eager_module")
    assert _peer_losses("compiled_step_module") == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert _peer_losses("eager_module_bf16") == pytest.approx(want, rel=2e-2, abs=2e-2)  # bf16 rounding


def test_against_peers_names_the_fastest_peer_per_batch():
    def row(variant, b, sps):
        return {"variant": variant, "batch_size": b, "samples_per_s": sps}

    rows = [
        row("eager_module", 32, 100.0),
        row("eager_module_channels_last", 32, 150.0),
        row("jax_jit", 32, 120.0),
        row("hwr_compiled", 32, 180.0),
        row("hwr_ensemble_k8", 32, 900.0),  # not a peer
        row("eager_module", 128, 300.0),
        row("hwr_eager", 128, 400.0),  # no hwr_compiled at 128: left out
    ]
    (only,) = step_mod.against_peers(rows)
    assert only["batch_size"] == 32 and only["fastest_peer"] == "eager_module_channels_last"
    assert only["ratio_to_fastest_peer"] == pytest.approx(1.2)
    rows += [row("eager_module_bf16", 32, 400.0), row("hwr_compiled_fast_bf16", 32, 300.0)]
    (fp32,) = step_mod.against_peers(rows)
    assert fp32 == only  # a bf16 peer is not the fp32 step's rival
    (bf16,) = step_mod.against_peers(rows, "hwr_compiled_fast_bf16")
    assert bf16["fastest_peer"] == "eager_module_bf16" and bf16["ratio_to_fastest_peer"] == pytest.approx(0.75)


def test_limit_threads_pins_jax_to_the_torch_thread_count():
    code = (
        "import os, sys; sys.path.insert(0, '.'); from benchmarks import step; "
        "print(step.limit_threads(), len(os.sched_getaffinity(0)), os.environ['XLA_FLAGS'])"
    )
    env = {**os.environ, "HWR_THREADS": "1", "XLA_FLAGS": "--xla_dump_to=/dev/null"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    n, cpus, flags = done.stdout.split(maxsplit=2)
    assert (n, cpus) == ("1", "1")
    assert flags.split() == [
        "--xla_dump_to=/dev/null",
        "--xla_cpu_multi_thread_eigen=false",
        "intra_op_parallelism_threads=1",
    ]
    assert step_mod.limit_threads({}) is None


def test_profile_step_prints_an_operator_table_per_variant(tmp_path):
    done = python(
        str(ROOT / "benchmarks" / "profile_step.py"),
        "--variants",
        "eager_module_channels_last,hwr_eager",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--config",
        TINY,
        "--trace",
        str(tmp_path),
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Self CPU") >= 2 and "aten::convolution_backward" in done.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"eager_module_channels_last.json", "hwr_eager.json"}


def test_photo_conditions_write_the_control_glyph_in_every_condition(tmp_path):
    """benchmarks/photo_conditions.py: a readable file per condition (PNG for the clean control, JPEG otherwise), each
    written from the control's glyph (same digit and hand); the control's ink is that glyph, and the EXIF photo is
    stored sideways with the tag that turns it upright."""
    import numpy as np
    from PIL import Image, ImageOps

    from benchmarks import photo_conditions as pc

    files = pc.render(tmp_path, 1, 7)
    assert [f[0] for f in files] == list(pc.CONDITIONS)
    _, control, digit, hand = files[0]
    for name, path, d, h in files:
        assert (d, h, path.stem) == (digit, hand, control.stem), name
        with Image.open(path) as im:
            im.load()
            assert (im.format, path.suffix) == (("PNG", ".png") if path == control else ("JPEG", ".jpg")), name
            if name == "EXIF rotated 90":
                assert im.getexif()[0x0112] in (6, 8) and ImageOps.exif_transpose(im).size == im.size[::-1]
    assert digit == 0 and pc.glyph(0, 7)[:2] == (digit, hand)
    ink = np.asarray(Image.open(control).convert("L")) < 240  # the glyph's mask crops at 0.05 ink
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == pc.glyph(0, 7)[2].shape
