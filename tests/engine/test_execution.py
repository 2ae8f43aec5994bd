"""hwr.engine.execution: where a run executes is not what it is. ``Execution``'s round trip and checks; an old
``config.json`` (compile, precision, memory format inside) that still loads and resumes; checkpoints loaded onto the
device asked for (``meta`` here); ``sync_every`` reaching the fit loop; the autotuned step's choice recorded in
``metrics.json`` and not in ``config.json``; and, on a CUDA machine only, a run trained on the GPU that resumes and
is evaluated on the CPU."""

import dataclasses
import json

import pytest
import torch
from tiny import EAGER, TINY_CNN

from hwr import checkpoint, optim, random, runs, tree
from hwr.config import from_dict, to_dict
from hwr.engine import train
from hwr.engine.execution import Execution, from_legacy, keep_candidate
from hwr.tasks import digits as experiment
from hwr.tasks.digits.config import RunConfig

TINY = RunConfig(
    model_config=TINY_CNN,
    dataset="optdigits",
    epochs=2,
    batch_size=32,
    limit_train=256,
    limit_test=200,
)
LEGACY = {"compile": False, "precision": "fp32", "memory_format": "contiguous"}  # RunConfig fields before the split


class _StopAt(train.Callback):
    """Interrupts the run as Ctrl-C would when ``epoch`` starts (the checkpoint of the epoch before is kept)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


class _Steps(train.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step(self, epoch: int, metrics: dict[str, float]) -> None:
        self.steps.append(int(metrics["steps"]))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """TINY trained without interruption, eagerly on the CPU."""
    out = tmp_path_factory.mktemp("execution") / "full"
    experiment.run(TINY, out, execution=EAGER, write_figures=False)
    return out


def test_execution_round_trips_and_refuses_bad_values():
    e = Execution(
        device="cuda:1",
        compile=False,
        precision="bf16",
        memory_format="channels_last",
        threads=2,
        tf32=True,
        sync_every=10,
    )
    assert from_dict(Execution, json.loads(json.dumps(to_dict(e)))) == e
    assert from_dict(Execution, to_dict(Execution())) == Execution()
    assert Execution().device == "auto" and Execution().memory_format == "auto" and Execution().compile
    for kwargs, match in [
        ({"precision": "fp16"}, "precision"),
        ({"memory_format": "nhwc"}, "memory_format"),
        ({"sync_every": 0}, "sync_every"),
        ({"threads": -1}, "threads"),
        ({"device": ""}, "device"),
    ]:
        with pytest.raises(ValueError, match=match):
            Execution(**kwargs)
    with pytest.raises(ValueError, match="unknown device 'nosuch'"):
        Execution(device="nosuch").resolve()
    assert Execution(device="cpu").resolve() == torch.device("cpu")


def test_old_config_keys_map_into_the_execution_not_the_config(tmp_path):
    old = {**to_dict(TINY), "compile": False, "precision": "bf16", "memory_format": "channels_last"}
    (tmp_path / runs.CONFIG).write_text(json.dumps(old))
    assert runs.read_config(tmp_path, RunConfig) == TINY  # the run folder drops them; from_dict alone refuses them
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        from_dict(RunConfig, old)
    assert from_legacy(old) == Execution(compile=False, precision="bf16", memory_format="channels_last")
    assert from_legacy(to_dict(TINY), EAGER) == EAGER  # a current config.json says nothing about execution
    assert not {"compile", "precision", "memory_format", "device"} & set(to_dict(TINY))
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        from_dict(RunConfig, {**to_dict(TINY), "device": "cpu"})


def test_an_old_run_folder_loads_and_resumes_as_it_ran(full, tmp_path):
    cut = tmp_path / "old"
    with pytest.raises(KeyboardInterrupt):
        experiment.run(TINY, cut, execution=EAGER, callbacks=[_StopAt(1)], write_figures=False)
    (cut / runs.CONFIG).write_text(json.dumps({**to_dict(TINY), **LEGACY}))  # as hwr wrote it before
    config = experiment.read_config(cut)
    execution = runs.saved_execution(cut, Execution(device="cpu"))
    assert config == TINY and execution == dataclasses.replace(EAGER, memory_format="contiguous")  # as it ran
    r = experiment.run(config, cut, execution=execution, resume=True, write_figures=False)
    a, _ = checkpoint.load_flat(full / runs.CHECKPOINT)
    b, _ = checkpoint.load_flat(cut / runs.CHECKPOINT)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert r["test"] == json.loads((full / runs.METRICS).read_text())["test"]
    assert r["execution"]["resumed_at_epoch"] == 1 and r["execution"]["compile"] is False
    assert json.loads((cut / runs.CONFIG).read_text())["compile"] is False  # the old file is left as it was


def test_checkpoints_load_onto_the_device_asked_for(full):
    ckpt = full / runs.CHECKPOINT
    _, params, state, _ = experiment.load_run(full, "meta")
    assert {t.device.type for t in tree.leaves((params, state))} == {"meta"}
    model, params, _, _ = experiment.load_run(full, "cpu")
    flat, _ = checkpoint.load_flat(ckpt)
    assert all(torch.equal(v, flat[f"params.{k}"]) for k, v in tree.flatten_names(params).items())
    # the whole TrainState, as a resume fills it: onto the template's device (meta), or onto the device named
    on_meta = train.init_state(model, optim.from_config(TINY.optim, 16), random.key(0, device="meta"))
    loaded = checkpoint.load(ckpt, on_meta)
    assert {t.device.type for t in tree.leaves(loaded)} == {"meta"} and loaded.step.shape == ()
    on_cpu = {"params": model.init(random.key(0))}
    assert {t.device.type for t in tree.leaves(checkpoint.load(ckpt, on_cpu, device="meta"))} == {"meta"}
    assert experiment.evaluate_run(full, "optdigits", device="cpu")["count"] > 0


def test_sync_every_reaches_the_fit_loop(tmp_path):
    steps = _Steps()
    experiment.run(
        dataclasses.replace(TINY, epochs=1),
        tmp_path / "s",
        execution=dataclasses.replace(EAGER, sync_every=3),
        callbacks=[steps],
        write_figures=False,
    )
    assert steps.steps == [3, 3, 2]  # 8 steps: two windows of 3 and the epoch's tail


def test_a_compiled_run_records_the_autotune_choice_in_metrics_not_config(tmp_path):
    torch._dynamo.reset()
    one = dataclasses.replace(TINY, epochs=1)
    for name, execution in [
        ("auto", Execution(device="cpu")),
        ("contiguous", Execution(device="cpu", memory_format="contiguous")),
    ]:
        out = tmp_path / name
        r = experiment.run(one, out, execution=execution, write_figures=False)
        used = r["execution"]
        assert used == json.loads((out / runs.METRICS).read_text())["execution"]
        assert used["device"] == "cpu" and used["device_name"] and used["compile"] is True
        assert used["candidate"] in used["seconds_per_step"] and isinstance(used["cached"], bool)
        assert used["machine"].startswith("cpu") and r["timing"]["compile_seconds"] > 0
        assert used["requested"] == to_dict(execution)
        assert not {"compile", "precision", "memory_format", "device", "execution"} & set(
            json.loads((out / runs.CONFIG).read_text())
        )
    assert used["candidate"] == "inductor" and used["memory_format"] == "contiguous"  # the forced format's one
    torch._dynamo.reset()


def test_keep_candidate_pins_what_a_run_started_with_where_it_can():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = Execution(device="cpu")
    assert keep_candidate(auto, "channels_last+aten", cpu) == dataclasses.replace(auto, candidate="channels_last+aten")
    assert keep_candidate(auto, None, cpu) == auto  # nothing recorded (an eager start, an old checkpoint)
    assert keep_candidate(auto, "cudagraphs", cpu) == auto  # a GPU's candidate resumed on the CPU: autotune again
    assert keep_candidate(auto, "cudagraphs", cuda).candidate == "cudagraphs"
    pinned = dataclasses.replace(auto, candidate="inductor")
    assert keep_candidate(pinned, "channels_last+aten", cpu) == pinned  # the flag given wins
    forced = dataclasses.replace(auto, memory_format="contiguous")
    assert keep_candidate(forced, "channels_last+aten", cpu) == forced
    assert keep_candidate(EAGER, "inductor", cpu) == EAGER


def test_a_compiled_run_resumes_with_the_candidate_it_started_with(tmp_path):
    torch._dynamo.reset()
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        experiment.run(TINY, cut, execution=Execution(device="cpu"), callbacks=[_StopAt(1)], write_figures=False)
    started = checkpoint.read_metadata(cut / runs.CHECKPOINT)["candidate"]
    assert started in {"inductor", "channels_last+aten", "channels_last+inductor"}
    r = experiment.run(TINY, cut, execution=Execution(device="cpu"), resume=True, write_figures=False)
    assert r["execution"]["requested"]["candidate"] == started == r["execution"]["candidate"]
    assert r["execution"]["resumed_at_epoch"] == 1
    torch._dynamo.reset()


@pytest.mark.cuda
def test_a_run_trained_on_cuda_resumes_and_evaluates_on_the_cpu(tmp_path):
    gpu = Execution(device="cuda", compile=False)
    one = tmp_path / "one"
    r = experiment.run(dataclasses.replace(TINY, epochs=1), one, execution=gpu, write_figures=False)
    assert r["execution"]["device"].startswith("cuda")
    _, params, _, _ = experiment.load_run(one, "cpu")
    assert {t.device.type for t in tree.leaves(params)} == {"cpu"}
    on_cpu = experiment.evaluate_run(one, "optdigits", device="cpu")
    on_gpu = experiment.evaluate_run(one, "optdigits", device="cuda")
    assert on_cpu["count"] == on_gpu["count"] and abs(on_cpu["accuracy"] - on_gpu["accuracy"]) <= 0.005
    cut = tmp_path / "cut"  # one epoch on the GPU, the second on the CPU
    with pytest.raises(KeyboardInterrupt):
        experiment.run(TINY, cut, execution=gpu, callbacks=[_StopAt(1)], write_figures=False)
    r = experiment.run(TINY, cut, execution=EAGER, resume=True, write_figures=False)
    assert r["execution"]["device"] == "cpu" and r["execution"]["resumed_at_epoch"] == 1 and len(r["epochs"]) == 2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_compiled_step_is_checked_at_its_precisions_tolerance(monkeypatch, precision):
    """``execution.train_step`` hands autotune the loss tolerance and the share of flipped first updates of the
    precision asked for (``LOSS_RTOL``, ``FLIP_SHARE``: bf16 rounds more than float32), and so does a reused shared
    step's check in ``tuned_step`` (a study's trials, every seed after the first)."""
    from hwr import losses, models
    from hwr.data.batches import synthetic_batches
    from hwr.engine import autotune
    from hwr.engine import execution as ex

    seen = {}

    def stop(*_args, **kwargs):  # records what autotune is asked, then stops before any compile
        seen.update(kwargs)
        raise InterruptedError

    monkeypatch.setattr(autotune, "compile_step", stop)
    monkeypatch.setattr(autotune, "check_step", stop)
    model, opt = models.get("cnn", TINY_CNN), optim.adam(1e-3)
    state, batch = train.init_state(model, opt, random.key(0)), synthetic_batches(random.key(1), 1, 8)[0]
    with pytest.raises(InterruptedError):
        ex.train_step(Execution(device="cpu", precision=precision), model, opt, losses.cross_entropy, state, batch)
    assert seen["loss_rtol"] == ex.LOSS_RTOL[precision] and seen["tag"].endswith(f"|{precision}")
    assert seen["flip_share"] == ex.FLIP_SHARE[precision]
    assert "atol" not in seen  # the updates keep their float32 floor

    class Shared(dict):  # every structure already compiled: tuned_step reuses it and checks it first
        def __contains__(self, key):
            return True

        def __getitem__(self, key):
            return (lambda state, batch, hp: None), None

    monkeypatch.setattr(ex, "_SHARED", Shared())
    seen.clear()
    tuned = ex.Tuned(lambda hp: (opt, losses.cross_entropy), {}, "test")
    with pytest.raises(InterruptedError):
        ex.tuned_step(Execution(device="cpu", precision=precision), model, tuned, state, batch)
    assert seen == {"loss_rtol": ex.LOSS_RTOL[precision], "flip_share": ex.FLIP_SHARE[precision]}
