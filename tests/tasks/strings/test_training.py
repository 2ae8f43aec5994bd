"""hwr.tasks.strings.training on a tiny configuration: the compiled step (one graph, equal to eager), run folders, resume,
transfer from a digit run, the height normalisation of real images, prediction, and the errors."""

import dataclasses
import json

import pytest
import torch
from tiny import EAGER, STRING_SPEC, STRINGS, TINY_CNN
from torch._dynamo.utils import counters

from hwr import checkpoint, models, optim, pattern, random, runs, tree
from hwr.config import from_dict, to_dict
from hwr.data import strings as ds
from hwr.engine import perf, train
from hwr.engine.execution import Execution
from hwr.models.cnn import CNNConfig
from hwr.models.crnn import CRNNConfig
from hwr.runs import RunError
from hwr.tasks import strings as sr
from hwr.tasks.digits.config import RunConfig

SPEC, TINY = STRING_SPEC, STRINGS
META = torch.device("meta")


@pytest.fixture(scope="module")
def prepared():
    return sr.prepare(TINY)


def test_config_round_trip_and_checks():
    again = from_dict(sr.StringsConfig, json.loads(json.dumps(to_dict(TINY))))
    assert again == TINY and isinstance(again.model_config, CRNNConfig) and isinstance(again.data, ds.StringSpec)
    with pytest.raises(ValueError, match="crnn"):
        sr.StringsConfig(model="cnn")
    with pytest.raises(ValueError, match="digit data set"):
        sr.StringsConfig(dataset="fashion-mnist")


def _one_step(p, device: str):
    """One eager strings step from ``p``'s initial state, run on ``device``; the new params and metrics on the CPU."""
    to = lambda t: tree.map(lambda x: x.to(device), t)
    state = train.init_state(
        p.model, p.optimizer, random.key(0, device=device), params=to(p.params), model_state=to(p.model_state)
    )
    batch = sr.StringBatch(*to(tuple(sr.StringBatches(random.key(1), p.pools["train"], SPEC, 8, 1)[0])))
    new, m = sr.train_step(p.model, p.optimizer, mean=p.mean, std=p.std)(state, batch)
    cpu = lambda t: tree.map(lambda x: x.cpu() if isinstance(x, torch.Tensor) else x, t)
    return cpu(new.params), cpu(m)


def test_strings_step_is_deterministic(prepared):
    """Same state, key and batch: the same step, to the bit (the step draws nothing from a global RNG)."""
    (pa, ma), (pb, mb) = _one_step(prepared, "cpu"), _one_step(prepared, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(pa), tree.leaves(pb)))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.cuda
def test_strings_step_on_cuda_equals_the_cpu_step(prepared):
    """The pure CTC step on a GPU (where F.ctc_loss would not compile) equals the CPU step to float tolerance."""
    (pc, mc), (pg, mg) = _one_step(prepared, "cpu"), _one_step(prepared, "cuda")
    torch.testing.assert_close(mg["loss"], mc["loss"], atol=1e-4, rtol=1e-4)
    for a, b in zip(tree.leaves(pg), tree.leaves(pc)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_compiled_step_is_one_graph_and_matches_eager():
    # strings of up to 2 digits, 24 px wide: 6 frames, so the unrolled BiGRU and CTC recursion build in half the
    # cold time of the 12 frames of the other tests (the graph's structure is the same)
    narrow = dataclasses.replace(SPEC, width=24, max_length=2)
    p = sr.prepare(dataclasses.replace(TINY, data=narrow))
    state = train.init_state(p.model, p.optimizer, random.key(0), params=p.params, model_state=p.model_state)
    batch = sr.StringBatches(random.key(1), p.pools["train"], narrow, 8, 1)[0]
    assert batch.images.shape[-1] == 24 and int(batch.lengths.max()) == 2
    step = sr.make_step(p)
    counters.clear()
    compiled = train.compile(step, **perf.CPU_BUILD)  # as hwr builds it on the CPU
    s_c, m_c = compiled(state, batch)
    s_e, m_e = step(state, batch)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch.testing.assert_close(m_c["loss"], m_e["loss"], atol=1e-5, rtol=1e-5)
    assert int(m_c["correct"]) == int(m_e["correct"]) and int(m_c["count"]) == 8
    for name, leaf in tree.flatten_names(s_c.params).items():
        torch.testing.assert_close(leaf, tree.flatten_names(s_e.params)[name], atol=1e-4, rtol=0, msg=name)
    assert all(t is not u for t, u in zip(tree.leaves(state.params), tree.leaves(s_e.params)))  # pure


def test_execution_layout_and_bf16(prepared):
    """bf16 autocast keeps float32 logits for CTC and lands near the float32 step; channels-last computes the same
    step (compiled, autotune chooses the layout among its candidates, as for digits: tests/engine)."""
    p = prepared
    state = train.init_state(p.model, p.optimizer, random.key(0), params=p.params, model_state=p.model_state)
    batch = sr.StringBatches(random.key(1), p.pools["train"], SPEC, 8, 1)[0]
    _, m32 = sr.make_step(p, EAGER)(state, batch)
    _, m16 = sr.make_step(p, Execution(compile=False, precision="bf16"))(state, batch)
    _, mcl = sr.make_step(p, Execution(compile=False, memory_format="channels_last"))(state, batch)
    assert m16["loss"].dtype == torch.float32 and torch.isfinite(m16["loss"])
    torch.testing.assert_close(m16["loss"], m32["loss"], rtol=0.05, atol=0.05)
    torch.testing.assert_close(mcl["loss"], m32["loss"], rtol=1e-5, atol=1e-5)


def test_strings_step_stays_on_the_device():
    """The train step and the evaluation sums on ``meta`` tensors: a host tensor made on the way would surface as
    a CPU tensor here (no GPU needed). Rendering reads its layout back (a data generator, outside the step)."""
    model = models.get("crnn", TINY.crnn)
    n, h, w = 8, SPEC.height, SPEC.width
    batch = sr.StringBatch(
        torch.zeros(n, 1, h, w, dtype=torch.uint8, device=META),
        torch.zeros(n, SPEC.max_length, dtype=torch.int64, device=META),
        torch.ones(n, dtype=torch.int64, device=META),
        torch.full((n,), w, dtype=torch.int64, device=META),
        torch.ones(n, dtype=torch.bool, device=META),
    )
    opt = optim.adam(1e-3)
    state = train.init_state(model, opt, random.key(0, device=META))
    new, m = sr.train_step(model, opt, mean=0.1, std=0.3)(state, batch)
    assert all(t.device == META for t in [*tree.leaves(new), *m.values()] if isinstance(t, torch.Tensor))
    sums = sr.eval_step(model, mean=0.1, std=0.3, max_length=SPEC.max_length)(new.params, new.model_state, batch)
    assert all(t.device == META for t in sums.values())


class _StopAt(train.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_run_folder_and_resume_equals_uninterrupted(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    result = sr.run(TINY, full, execution=EAGER)
    assert {p.name for p in full.iterdir()} >= {"config.json", "metrics.json", "checkpoint.safetensors"}
    assert result["task"] == "strings" and len(result["epochs"]) == 2
    assert {"cer", "string_accuracy", "by_length", "loss"} <= set(result["test"])
    assert [r["length"] for r in result["test"]["by_length"]] == [1, 2, 3]
    assert sr.is_strings_run(full) and sr.read_config(full) == TINY
    with pytest.raises(KeyboardInterrupt):
        sr.run(TINY, cut, callbacks=[_StopAt(1)], execution=EAGER)
    assert checkpoint.read_metadata(cut / "checkpoint.safetensors")["epochs_done"] == 1
    again = sr.run(TINY, cut, resume=True, execution=EAGER)
    a, _ = checkpoint.load_flat(full / "checkpoint.safetensors")
    b, _ = checkpoint.load_flat(cut / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again["test"] == result["test"]
    with pytest.raises(RunError, match="already holds a run"):
        sr.run(TINY, full, execution=EAGER)
    model, _, _, meta = sr.load_run(full)
    assert meta["task"] == "strings" and model.config == TINY.crnn


def _digit_run(folder, config: CNNConfig | None = None):
    """A digit classifier's run folder (config and checkpoint), without training it."""
    config = config or TINY_CNN
    folder.mkdir()
    cfg = RunConfig(model="cnn", model_config=config)
    (folder / "config.json").write_text(json.dumps(to_dict(cfg)))
    m = models.get("cnn", config)
    checkpoint.save(
        folder / "checkpoint.safetensors",
        {"params": m.init(random.key(5)), "model_state": {}},
        {"model": "cnn", "model_config": to_dict(config)},
    )
    return folder, m


def test_start_from_a_digit_cnn_and_bad_sources(tmp_path):
    src, cnn = _digit_run(tmp_path / "digits")
    p = sr.prepare(sr.StringsConfig(**{**TINY.__dict__, "source": str(src)}))
    assert p.transferred == ["block1.conv1.kernel", "block2.conv1.kernel"]  # batch norm: no conv biases
    assert torch.equal(p.params["block2"]["conv1"]["kernel"], cnn.init(random.key(5))["block2"]["conv1"]["kernel"])
    other, _ = _digit_run(tmp_path / "wide", CNNConfig(channels=(16, 32), hidden=16))
    with pytest.raises(RunError, match="none of its parameters fits"):
        sr.prepare(sr.StringsConfig(**{**TINY.__dict__, "source": str(other)}))
    with pytest.raises(RunError, match="not a run folder"):
        runs.read_source(tmp_path)
    # a digit run is not a strings run, and a strings config over a digit checkpoint is refused
    assert not sr.is_strings_run(src)
    with pytest.raises(RunError, match="digit classifier"):
        sr.read_config(src)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps(to_dict(TINY)))
    (fake / "checkpoint.safetensors").write_bytes((src / "checkpoint.safetensors").read_bytes())
    with pytest.raises(RunError, match="holds a digit classifier, not a strings model"):
        sr.load_run(fake)


def test_normalise_string_geometry():
    ink = torch.zeros(300, 900)
    ink[100:200, 50:120] = 1.0  # two blobs on one line, 100 px tall
    ink[120:180, 600:700] = 0.8
    ink[5, 5] = 0.1  # faint noise below the ink threshold is not cropped in
    out = sr.normalise_string(ink)
    assert out.dtype == torch.uint8 and out.shape[:2] == (1, 32)
    rows = (out[0] > 51).any(1).nonzero().squeeze(1)
    assert int(rows[-1] - rows[0] + 1) == 25  # ink_height + BLEED
    cols = (out[0] > 51).any(0).nonzero().squeeze(1)
    assert int(cols[0]) == 3 and out.shape[2] - 1 - int(cols[-1]) == 3  # the mean margins
    assert abs(out.shape[2] - 3 - 3 - 650 * 0.25) <= 1.5  # the aspect kept
    with pytest.raises(ValueError, match="no ink"):
        sr.normalise_string(torch.zeros(10, 10))
    with pytest.raises(ValueError, match="limit"):
        sr.normalise_string(torch.ones(10, 5000))


def test_predict_returns_strings_and_confidences(prepared):
    p = prepared
    s = ds.fixed_set(p.pools["test"], 4, SPEC)
    images = [im[..., : int(w)] for im, w in zip(s.images, s.widths)]
    out = sr.predict(p.model, p.params, p.model_state, images, mean=p.mean, std=p.std, width=SPEC.width)
    assert len(out) == 4 and all(len(lab) == len(conf) for lab, conf in out)
    assert all(0.0 <= c <= 1.0 for _, conf in out for c in conf)
    beam = sr.predict(p.model, p.params, p.model_state, images, mean=p.mean, std=p.std, width=SPEC.width, beam=4)
    assert len(beam) == 4
    assert sr.predict(p.model, p.params, p.model_state, [], mean=p.mean, std=p.std) == []


def test_a_reading_does_not_depend_on_the_other_strings_read_with_it(prepared):
    """The BiGRU's backward pass reads the padding after a string, so a batch padded to its widest member would
    read a short string differently beside a long one: each is read with the padding it gets alone."""
    p = prepared
    s = ds.fixed_set(p.pools["test"], 6, SPEC)
    images = [im[..., : int(w)] for im, w in zip(s.images, s.widths)]
    wide = torch.cat([images[0]] * 6, dim=-1)  # several training widths: pads every other string far further
    kw = dict(mean=p.mean, std=p.std, width=SPEC.width)
    for beam in (0, 4):
        alone = [sr.predict(p.model, p.params, p.model_state, [im], beam=beam, **kw)[0] for im in images]
        together = sr.predict(p.model, p.params, p.model_state, [wide, *images], beam=beam, **kw)[1:]
        assert [r[0] for r in together] == [r[0] for r in alone]
        for (_, a), (_, t) in zip(alone, together):
            assert t == pytest.approx(a, abs=1e-5)


def test_run_hands_its_test_strings_to_draw(tmp_path):
    """``draw`` gets the trained model and the very test strings the run scored (nothing is rendered again)."""
    seen = []
    result = sr.run(TINY, tmp_path / "run", execution=EAGER, draw=lambda out, f: seen.append((out, f)))
    ((out, f),) = seen
    assert out == tmp_path / "run" and len(f.test.lengths) == result["test"]["count"] == TINY.test_strings
    again = sr.evaluate(f.model, f.params, f.model_state, f.test, mean=f.mean, std=f.std)
    assert again["cer"] == result["test"]["cer"]


def test_predict_with_a_reading_format(prepared):
    p = prepared
    s = ds.fixed_set(p.pools["test"], 4, SPEC)
    images = [im[..., : int(w)] for im, w in zip(s.images, s.widths)]
    read = lambda fsa: sr.predict(
        p.model, p.params, p.model_state, images, mean=p.mean, std=p.std, width=SPEC.width, automaton=fsa
    )
    two = read(pattern.automaton(".{2}", ds.DIGITS))
    assert [len(lab) for lab, _ in two] == [2] * 4 and all(len(conf) == 2 for _, conf in two)
    assert all(lab in ([7, 7], [3]) for lab, _ in read(pattern.automaton("7{2}|3", ds.DIGITS)))
    assert [lab for lab, _ in read(pattern.automaton(r"\d{40}", ds.DIGITS))] == [[]] * 4  # 12 frames hold no 40
    with pytest.raises(ValueError, match="blank"):  # an automaton over more classes than the model has
        read(pattern.automaton(r"\d-\d", ds.DIGITS + "-.,"))


def test_separators_are_classes_and_old_configs_load():
    forms = sr.StringsConfig(data=ds.StringSpec(separators="-.,", separator_rate=0.1))
    assert forms.crnn.num_classes == 13 and TINY.crnn.num_classes == 10
    assert from_dict(sr.StringsConfig, json.loads(json.dumps(to_dict(forms)))) == forms
    old = to_dict(TINY)  # a config.json written before separators existed
    for name in ("separators", "separator_rate", "formats"):
        del old["data"][name]
    assert from_dict(sr.StringsConfig, old) == TINY


def test_a_run_records_its_classes_and_old_runs_read_digits(tmp_path):
    spec = dataclasses.replace(SPEC, separators="-", separator_rate=0.3)
    config = dataclasses.replace(TINY, data=spec, epochs=1, steps=1, val_strings=4, test_strings=4)
    sr.run(config, tmp_path / "run", execution=EAGER)
    model, _, _, meta = sr.load_run(tmp_path / "run")
    assert meta["classes"] == list("0123456789-") and model.config.num_classes == 11
    assert sr.alphabet_of(meta) == "0123456789-"
    older = {k: v for k, v in meta.items() if k != "classes"}  # metadata of a run from before: the spec says
    assert sr.alphabet_of(older) == "0123456789-"
    digits_only = {k: v for k, v in older.items() if k != "data"} | {"model_config": {"num_classes": 10}}
    assert sr.alphabet_of(digits_only) == "0123456789"
    with pytest.raises(RunError, match="inconsistent"):
        sr.alphabet_of({**meta, "classes": list("0123456789")}, "RUN")
