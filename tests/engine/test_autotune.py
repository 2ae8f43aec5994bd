"""hwr.engine.autotune: every candidate computes the eager step, the fastest is chosen, the choice is cached per
configuration and machine, and unequal or failing candidates are rejected with their reason."""

import json

import pytest
import torch
from tiny import TINY_CNN

from hwr import losses, models, optim, random, tree
from hwr.data.batches import synthetic_batches
from hwr.engine import autotune, train
from hwr.errors import HwrError

TINY = TINY_CNN


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / autotune.CACHE_FILE
    monkeypatch.setattr(autotune, "_cache_path", lambda: path)
    return path


def _setup(opt=None, cfg=TINY, n=16):
    model = models.get("cnn", cfg)
    opt = opt or optim.sgd(0.1)
    state = train.init_state(model, opt, random.key(0))
    batch = synthetic_batches(random.key(1), 1, n)[0]
    return model, opt, state, batch


def test_every_cpu_candidate_equals_the_eager_step_and_the_fastest_is_chosen(cache_file):
    """Compiled for real: each candidate's steps equal the eager steps to 1e-5 (SGD, so no optimizer amplifies
    rounding), and the choice is the candidate with the least seconds per step."""
    torch._dynamo.reset()
    model, opt, state, batch = _setup()
    step, choice = autotune.compile_step(model, opt, losses.cross_entropy, state, batch, steps=1, rounds=1)
    assert set(choice.seconds_per_step) == {c.name for c in autotune.CPU_CANDIDATES} and choice.rejected == {}
    assert choice.candidate.name == min(choice.seconds_per_step, key=choice.seconds_per_step.get)
    assert not choice.cached and choice.speedup() > 0
    eager = train.train_step(model, opt, losses.cross_entropy)
    for cand in autotune.CPU_CANDIDATES:
        fn = step if cand == choice.candidate else autotune.build_step(cand, model, opt, losses.cross_entropy)
        got, want = state, state
        for _ in range(3):
            got, got_m = fn(got, batch)
            want, want_m = eager(want, batch)
        for a, b in zip(tree.leaves(got.params), tree.leaves(want.params), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=cand.name)
        torch.testing.assert_close(got_m["loss"], want_m["loss"], rtol=1e-5, atol=1e-5)
    saved = json.loads(cache_file.read_text())[choice.key]
    assert saved["candidate"] == choice.candidate.name and saved["machine"] == choice.machine
    torch._dynamo.reset()


def _eager_candidates(monkeypatch, built, slow=()):
    """Candidates built as eager steps (no compile): ``built`` records each build; names in ``slow`` sleep."""
    import time

    def build(c, model, opt, loss, **kw):
        built.append(c.name)
        step = train.train_step(model, opt, loss, **kw)

        def timed(s, b):
            if c.name in slow:
                time.sleep(0.25)  # far above an eager step of the tiny CNN, whatever the load
            return step(s, b)

        return timed

    monkeypatch.setattr(autotune, "build_step", build)


def test_choice_is_cached_per_configuration(cache_file, monkeypatch):
    built = []
    _eager_candidates(monkeypatch, built, slow=("inductor", "channels_last+inductor"))
    model, opt, state, batch = _setup()
    _, first = autotune.compile_step(model, opt, losses.cross_entropy, state, batch, steps=1, rounds=1)
    assert first.candidate.name == "channels_last+aten" and not first.cached
    assert sorted(built) == sorted(c.name for c in autotune.CPU_CANDIDATES)
    built.clear()
    _, again = autotune.compile_step(model, opt, losses.cross_entropy, state, batch, steps=1, rounds=1)
    assert again.cached and again.candidate == first.candidate and again.key == first.key
    assert built == ["channels_last+aten"]  # a cached choice compiles only itself
    built.clear()
    _, other = autotune.compile_step(model, opt, losses.cross_entropy, state, batch, steps=1, rounds=1, tag="aug")
    assert not other.cached and other.key != first.key and len(built) == 3
    bigger = synthetic_batches(random.key(1), 1, 32)[0]
    assert autotune.compile_step(model, opt, losses.cross_entropy, state, bigger, steps=1, rounds=1)[1].key != first.key
    assert len(json.loads(cache_file.read_text())) == 3
    _, fresh = autotune.compile_step(model, opt, losses.cross_entropy, state, batch, steps=1, rounds=1, cache=False)
    assert not fresh.cached


def test_unequal_and_failing_candidates_are_rejected(cache_file):
    model, opt, state, batch = _setup(optim.adam(1e-3))
    want = train.train_step(model, opt, losses.cross_entropy)(state, batch)
    eager = train.train_step(model, opt, losses.cross_entropy)
    assert autotune._mismatch(eager, state, batch, want, 1e-5) is None
    wrong = train.train_step(model, optim.adam(3e-3), losses.cross_entropy)  # a different function
    assert "update differs" in autotune._mismatch(wrong, state, batch, want, 1e-5)
    smoothed = train.train_step(model, opt, losses.make_loss(losses.LossConfig(label_smoothing=0.1)))
    assert "loss differs" in autotune._mismatch(smoothed, state, batch, want, 1e-5)
    broken = autotune.Candidate("broken", options={"no_such_inductor_option": 1})
    with pytest.raises(autotune.UnequalStep, match=r"no compile configuration.*broken") as err:
        autotune.compile_step(model, opt, losses.cross_entropy, state, batch, candidates=[broken])
    assert isinstance(err.value, HwrError)  # the CLI's one line and exit code 2, naming the fix:
    assert "choose another candidate (inductor, channels_last+aten, channels_last+inductor" in str(err.value)
    assert str(err.value).endswith("train eagerly (--no-compile)")


def test_default_candidates():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cnn = models.get("cnn", TINY).init(random.key(0))
    rnn = models.get("rnn").init(random.key(0))
    assert autotune.default_candidates(cpu, cnn) == autotune.CPU_CANDIDATES
    assert autotune.default_candidates(cuda, cnn) == autotune.CUDA_CANDIDATES
    assert [c.name for c in autotune.default_candidates(cpu, rnn)] == ["inductor"]  # no conv: layout is moot
    assert {c.mode for c in autotune.CUDA_CANDIDATES} == {None, "reduce-overhead"}


def test_cpu_candidates_build_with_the_cpu_options_and_cuda_ones_without():
    """``perf.CPU_BUILD`` (realize_reads_threshold=1: cold builds 0.71x, same speed) on every CPU candidate, kept
    beside a candidate's own options; CUDA candidates carry only their own (its effect there is not measured)."""
    from hwr.engine import perf

    for c in autotune.CPU_CANDIDATES:
        assert c.options.items() >= perf.CPU_BUILD.items(), c.name
    aten = next(c for c in autotune.CPU_CANDIDATES if c.name == "channels_last+aten")
    assert aten.options == perf.CPU_BUILD | perf.ATEN_GRAPH
    assert all("realize_reads_threshold" not in c.options for c in autotune.CUDA_CANDIDATES)
    assert [c.name for c in autotune.CUDA_CANDIDATES[:3]] == [c.name for c in autotune.CPU_CANDIDATES]
    assert autotune.inductor(torch.device("cpu")) is autotune.CPU_CANDIDATES[0]
    assert autotune.inductor(torch.device("cuda")).options == {}


def test_compile_refuses_mode_and_options_together():
    with pytest.raises(ValueError, match="mode or inductor options"):
        train.compile(lambda x: x, mode="reduce-overhead", fallback_by_default=True)


def test_cudagraph_mode_returns_owned_outputs():
    """``mode="reduce-overhead"`` (CUDA graphs on a GPU; plain inductor here) returns copies, never graph buffers."""
    fn = train.compile(lambda x: {"y": x * 2, "n": 3}, mode="reduce-overhead")
    x = torch.arange(4.0)
    first = fn(x)
    second = fn(x + 1)
    assert torch.equal(first["y"], x * 2) and torch.equal(second["y"], (x + 1) * 2) and first["n"] == 3


def test_an_update_flipped_by_a_gradient_within_rounding_of_zero_is_not_a_mismatch(cache_file):
    """Adam's first update is ~lr * sign(g): one element of a small leaf whose gradient is rounding noise may come
    out with the other sign (a 32-channel batch-norm bias: 35% of its update's norm); many such elements may not."""
    model, opt, state, batch = _setup(optim.adam(1e-3))
    step = train.train_step(model, opt, losses.cross_entropy)
    want = step(state, batch)
    bias = next(k for k, v in tree.flatten_names(want[0].params).items() if k.endswith("bias") and v.numel() >= 4)

    def flipped(count):
        def fn(s, b):
            new, metrics = step(s, b)
            flat = tree.flatten_names(new.params)
            before = tree.flatten_names(s.params)[bias]
            t = flat[bias].clone()
            t[:count] = before[:count] - (t[:count] - before[:count])  # the update of `count` elements reversed
            names = {k: (t if k == bias else v) for k, v in flat.items()}
            return new._replace(params=tree.unflatten_names(names)), metrics

        return fn

    assert autotune._mismatch(flipped(1), state, batch, want, 1e-5) is None
    assert "update differs" in autotune._mismatch(flipped(4), state, batch, want, 1e-5)


def test_a_bf16_step_may_flip_a_few_more_first_updates_than_a_float32_one(cache_file):
    """``execution.FLIP_SHARE``: bf16 rounds near-zero gradients far more coarsely (the strings recipe's compiled bf16
    step on an Intel Xeon with AMX flipped 3 of its first convolution's 288 first updates against the eager bf16
    step, 1.04%, and 1% refused every candidate): 3% of a leaf flipped passes at bf16's share and not at float32's;
    a third of it flipped, or every update reversed, passes at neither."""
    from hwr.engine.execution import FLIP_SHARE

    model, opt, state, batch = _setup(optim.adam(1e-3))
    want = train.train_step(model, opt, losses.cross_entropy)(state, batch)
    flat, before = tree.flatten_names(want[0].params), tree.flatten_names(state.params)
    name = next(k for k, v in flat.items() if v.numel() >= 200)

    def flipped(share):
        t = flat[name].clone().flatten()
        n = round(share * t.numel())
        b = before[name].flatten()
        t[:n] = b[:n] - (t[:n] - b[:n])  # the update of the first n elements reversed
        params = tree.unflatten_names({**flat, name: t.view_as(flat[name])})
        return want[0]._replace(params=params), want[1]

    fp32, bf16 = FLIP_SHARE["fp32"], FLIP_SHARE["bf16"]
    assert "update differs" in autotune.compare(flipped(0.03), want, state, flip_share=fp32)
    assert autotune.compare(flipped(0.03), want, state, flip_share=bf16) is None
    for share in (0.33, 1.0):
        assert "update differs" in autotune.compare(flipped(share), want, state, flip_share=bf16)


def test_a_bf16_step_may_round_its_loss_further_from_eager_but_never_its_updates():
    """``execution.LOSS_RTOL``: a loss 2e-5 (relative) from the eager one, as bf16 autocast's rounding left the
    strings recipe's compiled step, is refused for float32 and accepted for bf16; 1% off is refused for both. The
    wider loss tolerance leaves the update check alone: at a warm-up learning rate (Adam 2.4e-4, every update under
    1e-3), reversed or missing updates are still refused."""
    from hwr.engine.execution import LOSS_RTOL

    model, opt, state, batch = _setup(optim.adam(2.4e-4))
    want = train.train_step(model, opt, losses.cross_entropy)(state, batch)
    off = lambda r: (want[0], {**want[1], "loss": want[1]["loss"] * (1 + r)})
    assert "loss differs" in autotune.compare(off(2e-5), want, state, loss_rtol=LOSS_RTOL["fp32"])
    assert autotune.compare(off(2e-5), want, state, loss_rtol=LOSS_RTOL["bf16"]) is None
    assert "loss differs" in autotune.compare(off(1e-2), want, state, loss_rtol=LOSS_RTOL["bf16"])
    reversed_ = tree.map(lambda new, old: 2 * old - new, want[0].params, state.params)
    for params in (reversed_, state.params):  # every update the wrong way; no update at all
        got = (want[0]._replace(params=params), want[1])
        assert "update differs" in autotune.compare(got, want, state, loss_rtol=LOSS_RTOL["bf16"])


def test_a_candidate_must_also_agree_on_the_optimizer_state_the_counter_and_the_key():
    """Equal parameters after one step are not enough: a candidate whose Adam moments or step counter went wrong
    diverges from the next step on, and one that moved the key draws other augmentation."""
    model, opt, state, batch = _setup(optim.adam(1e-3))
    want = train.train_step(model, opt, losses.cross_entropy)(state, batch)
    assert autotune.compare(want, want, state) is None
    adam = want[0].opt_state[0]
    wrong = {
        "opt_state": (adam._replace(count=adam.count + 1), *want[0].opt_state[1:]),  # bias correction off by a step
        "step": want[0].step + 1,
        "key": random.key(7),
    }
    for field, value in wrong.items():
        got = (want[0]._replace(**{field: value}), want[1])
        assert autotune.compare(got, want, state) is not None, field
    moments = (adam._replace(mu=tree.map(lambda m: -m, adam.mu)), *want[0].opt_state[1:])  # momentum reversed
    assert "opt_state" in autotune.compare((want[0]._replace(opt_state=moments), want[1]), want, state)
