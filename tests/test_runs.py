"""hwr.runs: the run folder written once for every task. Reading a config (old execution keys dropped, another
task's folder refused by name), opening a run (new, refused, resumed, finished), carrying parameters between runs
(``transfer``, ``read_source``), and a run folder as the 0.1 release wrote it (literal JSON) that still loads,
evaluates and resumes; a finished run of either task returns its metrics before anything is prepared."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import EAGER, STRINGS, TINY_CNN, run_config

from hwr import checkpoint, models, random, runs, tree
from hwr.config import to_dict
from hwr.engine import train
from hwr.models.cnn import CNNConfig
from hwr.optim import from_config
from hwr.tasks import digits, strings
from hwr.tasks.digits import preparation
from hwr.tasks.digits.config import RunConfig

OLD_CONFIG = {  # a digit run's config.json as hwr 0.1 wrote it: execution settings inside, no "task" key
    "model": "cnn",
    "model_config": {"channels": [4, 8], "hidden": 16},
    "dataset": "optdigits",
    "epochs": 2,
    "batch_size": 64,
    "optim": {"name": "adam", "lr": 0.003, "schedule": "constant"},
    "limit_train": 256,
    "limit_test": 100,
    "compile": False,
    "precision": "fp32",
    "memory_format": "contiguous",
}


def test_transfer_keeps_matching_and_reinits_changed():
    src = models.get("cnn").init(random.key(0))
    flat = tree.flatten_names(src)
    fresh = models.get("cnn", CNNConfig(hidden=64, num_classes=5)).init(random.key(1))
    with pytest.raises(
        runs.RunError, match=r"fc.kernel \(\(128, 3136\) in the source, \(64, 3136\) here\).*reinit=\('fc', 'head'\)"
    ):
        runs.transfer(flat, fresh)  # never a silent fresh initialisation
    params, kept_fresh = runs.transfer(flat, fresh, reinit=("fc", "head"))
    assert kept_fresh == runs.transfer(flat, fresh, strict=False)[1]
    assert torch.equal(params["block1"]["conv1"]["kernel"], src["block1"]["conv1"]["kernel"])
    assert sorted(kept_fresh) == ["fc.bias", "fc.kernel", "head.bias", "head.kernel"]
    assert torch.equal(params["head"]["kernel"], fresh["head"]["kernel"])
    # the source is not aliased: later updates cannot leak back
    assert params["block1"]["conv1"]["kernel"].data_ptr() != src["block1"]["conv1"]["kernel"].data_ptr()
    assert all(torch.equal(v, tree.flatten_names(fresh)[k]) for k, v in tree.flatten_names(fresh).items())


def test_transfer_reinit_and_keep_force_fresh():
    src = tree.flatten_names(models.get("cnn").init(random.key(0)))
    fresh = models.get("cnn").init(random.key(1))
    _, kept = runs.transfer(src, fresh, reinit=("head",))
    assert sorted(kept) == ["head.bias", "head.kernel"]
    _, kept = runs.transfer(src, fresh, keep=lambda name: name.startswith("block"), strict=False)
    assert sorted(kept) == ["fc.bias", "fc.kernel", "head.bias", "head.kernel"]


def test_a_fine_tune_to_another_class_count_gets_a_fresh_head_and_nothing_else():
    src = tree.flatten_names(models.get("cnn").init(random.key(0)))
    assert preparation.fresh_groups((), src, 10) == ()
    assert preparation.fresh_groups((), src, 3) == ("head",)
    assert preparation.fresh_groups(("fc", "head"), src, 3) == ("fc", "head")


def _old_folder(path):
    """A half-trained run folder as 0.1 wrote it: the literal config.json and a checkpoint after epoch 1."""
    path.mkdir()
    (path / runs.CONFIG).write_text(json.dumps(OLD_CONFIG))
    model = models.get("cnn", TINY_CNN)
    p = digits.prepare(digits.read_config(path))
    state = train.init_state(model, p.optimizer, p.keys.train, params=p.params, model_state=p.model_state)
    meta = {"model": "cnn", "model_config": to_dict(model.config), "classes": list(p.classes), "mean": p.mean}
    meta |= {
        "std": p.std,
        "compile_seconds": 0.0,
        "epochs_done": 1,
        "history": [{"epoch": 1, "train_seconds": 1.0, "samples_per_s": 1.0}],
    }
    checkpoint.save(path / runs.CHECKPOINT, state, meta)
    return path


def test_an_old_run_folder_reads_loads_evaluates_and_resumes(tmp_path):
    old = _old_folder(tmp_path / "old")
    config = digits.read_config(old)
    assert config == run_config(dataset="optdigits", epochs=2)
    assert runs.saved_execution(old).compile is False  # it resumes as it ran
    assert runs.task_of(old) == "digits"
    model, _, _, meta = digits.load_run(old)
    assert model.config == TINY_CNN and meta["epochs_done"] == 1
    assert digits.evaluate_run(old, "optdigits")["count"] > 0
    r = digits.run(config, old, execution=runs.saved_execution(old, EAGER), resume=True, write_figures=False)
    assert [e["epoch"] for e in r["epochs"]] == [1, 2] and r["execution"]["resumed_at_epoch"] == 1
    assert json.loads((old / runs.CONFIG).read_text())["compile"] is False  # the old file is left as it was


def test_read_config_errors_name_the_problem(tmp_path):
    with pytest.raises(runs.RunError, match="does not exist"):
        runs.read_config(tmp_path / "nowhere", RunConfig)
    (tmp_path / "digit.png").write_bytes(b"png")  # `hwr predict --run digit.png run/`: arguments swapped
    with pytest.raises(runs.RunError, match=r"digit.png is a file, not a run folder; pass the --out folder"):
        runs.read_config(tmp_path / "digit.png", RunConfig)
    with pytest.raises(runs.RunError, match="not a run folder"):
        runs.read_config(tmp_path, RunConfig)
    (tmp_path / runs.CONFIG).write_text("{not json")
    with pytest.raises(runs.RunError, match="not valid JSON"):
        runs.read_config(tmp_path, RunConfig)
    (tmp_path / runs.CONFIG).write_text("[1]")
    with pytest.raises(runs.RunError, match="not a run config"):
        runs.read_config(tmp_path, RunConfig)
    (tmp_path / runs.CONFIG).write_text(json.dumps({"task": "strings"}))
    with pytest.raises(runs.RunError, match="holds a strings model, not a digit classifier"):
        digits.read_config(tmp_path)
    (tmp_path / runs.CONFIG).write_text(json.dumps({"epochs": "ten"}))
    with pytest.raises(runs.RunError, match="not a valid digits config"):
        digits.read_config(tmp_path)


def test_open_run_new_refused_resumed(tmp_path):
    config = run_config(dataset="optdigits")
    assert runs.open_run(tmp_path / "a", config, RunConfig, resume=False) is None
    assert json.loads((tmp_path / "a" / runs.CONFIG).read_text()) == to_dict(config)
    with pytest.raises(runs.RunError, match="nothing to resume"):
        runs.open_run(tmp_path / "b", config, RunConfig, resume=True)  # no config.json
    # stopped before its first checkpoint: config.json alone resumes (from epoch 0), another config is refused
    assert runs.open_run(tmp_path / "a", config, RunConfig, resume=True) is None
    assert runs.open_run(tmp_path / "a", config, RunConfig, resume=False) is None  # the same run started again
    with pytest.raises(runs.RunError, match=r"holds the config of another run.*hwr train --out .* --resume"):
        runs.open_run(tmp_path / "a", run_config(dataset="optdigits", epochs=5), RunConfig, resume=False)
    (tmp_path / "a" / runs.CHECKPOINT).write_bytes(b"")
    with pytest.raises(runs.RunError, match="already holds a run"):
        runs.open_run(tmp_path / "a", config, RunConfig, resume=False)
    with pytest.raises(runs.RunError, match="different config"):
        runs.open_run(tmp_path / "a", run_config(dataset="optdigits", epochs=5), RunConfig, resume=True)


@pytest.mark.parametrize("task", ["digits", "strings"])
def test_a_finished_run_returns_its_metrics_before_preparing(tmp_path, monkeypatch, task):
    """Resuming a finished run of either task prepares nothing (no data loaded, nothing rewritten)."""
    module = digits if task == "digits" else strings
    config = run_config(dataset="optdigits") if task == "digits" else STRINGS
    out = tmp_path / task
    kw = {"write_figures": False} if task == "digits" else {}
    first = module.run(config, out, execution=EAGER, **kw)
    stamp = (out / runs.CONFIG).stat().st_mtime_ns
    monkeypatch.setattr(module.training, "prepare", lambda *a, **k: pytest.fail("prepared a finished run"))
    again = module.run(config, out, execution=EAGER, resume=True, **kw)
    assert again == json.loads(json.dumps(first)) and (out / runs.CONFIG).stat().st_mtime_ns == stamp


def test_read_source_and_load_run_of_a_trained_run(tmp_path):
    out = tmp_path / "run"
    digits.run(run_config(dataset="optdigits"), out, execution=EAGER, write_figures=False)
    params, _ = runs.read_source(out)
    _, loaded, _, meta = runs.load_run(out, "meta")
    assert set(params) == set(tree.flatten_names(loaded)) and meta["model"] == "cnn"
    assert {t.device.type for t in tree.leaves(loaded)} == {"meta"}
    assert all(torch.equal(v, checkpoint.load_flat(out / runs.CHECKPOINT)[0][f"params.{k}"]) for k, v in params.items())
    with pytest.raises(runs.RunError, match="a digit classifier, not a strings model"):
        runs.load_run(out, task="strings")
    with pytest.raises(runs.RunError, match="not a run folder"):
        runs.read_source(tmp_path)


def test_execution_record_and_timing():
    rec = runs.execution_record(EAGER, torch.device("cpu"), 2, {"compile": False})
    assert rec["device"] == "cpu" and rec["resumed_at_epoch"] == 2 and rec["compile"] is False
    assert rec["requested"] == to_dict(EAGER)
    t = runs.timing(
        [{"train_seconds": 2.0, "samples_per_s": 10.0}, {"train_seconds": 4.0, "samples_per_s": 20.0}], 1.5, 3
    )
    assert t == {"compile_seconds": 1.5, "train_seconds": 6.0, "samples_per_s": 15.0, "seconds_per_step": 1.0}


def test_optimizer_from_config_is_the_chain_it_names():
    from hwr.optim import OptimConfig

    params = {"w": torch.ones(4)}
    g = {"w": torch.full((4,), 10.0)}  # norm 20: clipped to norm 1, each entry 0.5
    sgd = from_config(OptimConfig("sgd", 0.1, "constant", momentum=0.0, clip_norm=1.0), 10)
    updates, _ = sgd.update(g, sgd.init(params), params)
    assert torch.allclose(updates["w"], torch.full((4,), -0.05), atol=1e-7)  # clipped, then -lr * g
    unclipped = from_config(OptimConfig("sgd", 0.1, "constant", momentum=0.0), 10)
    assert torch.allclose(unclipped.update(g, unclipped.init(params), params)[0]["w"], torch.full((4,), -1.0))
    adam = from_config(OptimConfig("adam", 1e-3, "constant", clip_norm=1.0), 10)
    state = adam.init(params)
    for scale in (10.0, 0.1):  # Adam's second step sees the clipped first gradient in its moments
        updates, state = adam.update({"w": torch.full((4,), scale)}, state, params)
    ref = torch.nn.Parameter(torch.ones(4))
    torch_adam = torch.optim.Adam([ref], lr=1e-3)
    for scale in (10.0, 0.1):
        before = ref.detach().clone()
        ref.grad = torch.full((4,), scale)
        torch.nn.utils.clip_grad_norm_([ref], 1.0)
        torch_adam.step()
    assert torch.allclose(updates["w"], ref.detach() - before, atol=1e-7)


def test_resume_without_a_checkpoint_starts_at_epoch_zero(tmp_path):
    state = object()
    assert runs.resume(tmp_path, state) == runs.Resumed(state, 0, [], {})


def _hold(folder: Path) -> subprocess.Popen:
    """A process holding ``folder``'s run lock until killed; returns once the lock is held."""
    code = "import sys, time; from pathlib import Path; from hwr import runs\n"
    code += "with runs.locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)\n"
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_one_process_per_run_folder_and_a_killed_holder_frees_it(tmp_path):
    holder = _hold(tmp_path / "run")
    try:
        busy = pytest.raises(runs.RunError, match=rf"in use by another hwr process \(pid {holder.pid}\)")
        with busy, runs.locked(tmp_path / "run"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with runs.locked(tmp_path / "run"):  # the kernel dropped the dead holder's lock: no stale lock to clean up
        assert (tmp_path / "run" / runs.LOCK).read_text().strip() == str(os.getpid())
    with runs.locked(tmp_path / "run"):  # released on exit
        pass


def test_a_run_tells_its_callbacks_before_it_builds_the_step(tmp_path):
    class Built(train.Callback):
        def __init__(self) -> None:
            self.calls: list[bool] = []

        def on_build(self, compile: bool) -> None:
            self.calls.append(compile)

    built = Built()
    digits.run(run_config(), tmp_path / "r", execution=EAGER, callbacks=[built], write_figures=False)
    assert built.calls == [False]  # eager: nothing to announce; a compiled run passes True
    again = Built()
    digits.run(run_config(), tmp_path / "r", execution=EAGER, callbacks=[again], resume=True)
    assert again.calls == []  # a finished run builds nothing


def test_calibration_round_trips_and_a_bad_file_is_named(tmp_path):
    assert runs.read_calibration(tmp_path) is None  # a run trained before calibration existed
    c = runs.Calibration(
        1.25,
        "max_softmax",
        {0.01: {"threshold": 0.9, "coverage": 0.97, "error": 0.0099, "accepted": 97}, 1 / 3: {"threshold": 0.1}},
        "val",
        100,
        {"nll_before": 0.5, "nll_after": 0.4},
    )
    runs.write_calibration(tmp_path, c)
    assert runs.read_calibration(tmp_path) == c and c.threshold(0.01) == 0.9 and c.threshold(0.02) is None
    assert json.loads((tmp_path / runs.CALIBRATION).read_text())["nll_before"] == 0.5
    for body in ('{"temperature": 0}', '{"thresholds": {}}', "[1]", "{", '{"temperature": 1, "thresholds": {"2": {}}}'):
        (tmp_path / runs.CALIBRATION).write_text(body)
        with pytest.raises(runs.RunError, match=f"does not hold a valid calibration.*hwr calibrate {tmp_path}"):
            runs.read_calibration(tmp_path)
