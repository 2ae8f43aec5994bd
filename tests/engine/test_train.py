"""hwr.engine.train: the pure step (compiled == eager, one graph, no recompiles, purity, determinism, parity with an
nn.Module + torch.optim.Adam loop), eval_step, predict, fit and its failure modes, batch validation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from benchmarks import reference
from hwr import models, optim, random, tree
from hwr.data.batches import Batch
from hwr.engine import perf, train
from hwr.losses import LossConfig, make_loss
from hwr.models.cnn import CNNConfig

B = 32
SCHEDULE_STEPS = 20


def _batch(n: int = B, seed: int = 0, masked: int = 4) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    mask = torch.arange(n) < n - masked
    return Batch(images, labels, mask)


def _clone(t):
    return tree.map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, t)


def _assert_trees_equal(a, b):
    assert tree.structure(a) == tree.structure(b)
    for x, y in zip(tree.leaves(a), tree.leaves(b)):
        assert torch.equal(x, y)


@pytest.fixture(scope="module")
def seed():
    """The seed CNN with Adam on a one-cycle schedule: eager step, compiled step (compiled once here)."""
    model = models.get("cnn")
    opt = optim.adam(optim.onecycle(3e-3, SCHEDULE_STEPS))
    step = train.train_step(model, opt, make_loss(LossConfig()))
    compiled = train.compile(step, **perf.CPU_BUILD)  # as hwr builds it on the CPU
    state = train.init_state(model, opt, random.key(0))
    batch = _batch()
    torch._dynamo.reset()
    counters.clear()
    first = compiled(state, batch)
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    return {
        "model": model,
        "opt": opt,
        "step": step,
        "compiled": compiled,
        "state": state,
        "batch": batch,
        "first": first,
        "graphs": graphs,
        "breaks": breaks,
    }


# ---------------------------------------------------------------------------------------------- the compiled step


def test_compiled_step_equals_eager_step(seed):
    eager_state, eager_m = seed["step"](seed["state"], seed["batch"])
    comp_state, comp_m = seed["first"]
    assert int(comp_state.step) == 1 and comp_state.step.dtype == torch.int64
    for name, leaf in tree.flatten_names(comp_state.params).items():
        ref = tree.flatten_names(eager_state.params)[name]
        assert torch.allclose(leaf, ref, atol=1e-5, rtol=0), name
        assert not torch.equal(leaf, tree.flatten_names(seed["state"].params)[name]), f"{name} did not train"
    for a, b in zip(tree.leaves(comp_state.opt_state), tree.leaves(eager_state.opt_state)):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert torch.allclose(comp_m["loss"], eager_m["loss"], atol=1e-5)
    assert torch.allclose(comp_m["grad_norm"], eager_m["grad_norm"], rtol=1e-4)
    for k in ("correct", "count"):
        assert torch.equal(comp_m[k], eager_m[k])
    assert int(comp_m["count"]) == B - 4
    assert torch.allclose(comp_m["loss_sum"], comp_m["loss"] * (B - 4))


def test_compiled_step_is_one_graph_without_breaks(seed):
    assert seed["graphs"] == 1
    assert seed["breaks"] == 0


def test_compiled_step_does_not_recompile_as_the_schedule_moves(seed):
    schedule = optim.onecycle(3e-3, SCHEDULE_STEPS)
    state = seed["first"][0]
    lrs, losses = [], []
    with torch.compiler.set_stance("fail_on_recompile"):
        for i in range(SCHEDULE_STEPS):
            lrs.append(float(schedule(state.opt_state[1].count)))
            state, m = seed["compiled"](state, _batch(seed=i % 3))
            losses.append(float(m["loss"]))
    assert counters["stats"]["unique_graphs"] == 1
    assert int(state.step) == SCHEDULE_STEPS + 1
    assert len(set(lrs)) == SCHEDULE_STEPS  # a different learning rate every step, one graph
    assert all(math.isfinite(v) for v in losses)


# ---------------------------------------------------------------------------------------------- purity, determinism


def test_step_leaves_state_and_batch_unchanged(seed):
    state, batch = seed["first"][0], seed["batch"]
    state_before, batch_before = _clone(state), _clone(batch)
    for fn in (seed["step"], seed["compiled"]):
        new_state, _ = fn(state, batch)
        _assert_trees_equal(state, state_before)
        _assert_trees_equal(batch, batch_before)
        assert int(new_state.step) == int(state.step) + 1
        assert new_state.key is state.key or torch.equal(new_state.key, state.key)


def _dropout_run(key_seed: int, steps: int = 5):
    model = models.get("cnn", CNNConfig(dropout=0.5, channels=(8, 16), hidden=32))
    opt = optim.adam(1e-3)
    step = train.train_step(model, opt, make_loss(LossConfig()))
    state = train.init_state(model, opt, random.key(0))
    state = state._replace(key=random.key(key_seed))  # same init, different training key
    for i in range(steps):
        state, _ = step(state, _batch(16, seed=i))
    return state


def test_same_key_same_state_different_key_different_dropout():
    a, b, c = _dropout_run(1), _dropout_run(1), _dropout_run(2)
    _assert_trees_equal(a, b)
    differs = [not torch.equal(x, y) for x, y in zip(tree.leaves(a.params), tree.leaves(c.params))]
    assert all(differs)


def test_init_state():
    model, opt = models.get("cnn"), optim.adam(1e-3)
    k = random.key(3)
    s = train.init_state(model, opt, k)
    assert int(s.step) == 0 and s.step.dtype == torch.int64 and s.step.shape == ()
    assert not torch.equal(s.key, k)
    _assert_trees_equal(s.params, model.init(random.split(k)[0]))
    given = tree.map(torch.zeros_like, s.params)
    s2 = train.init_state(model, opt, k, params=given)
    assert s2.params is given and s2.model_state == {}
    _assert_trees_equal(s2.opt_state[0].mu, tree.zeros_like(given))


# ---------------------------------------------------------------------------------------------- parity with torch


def test_eager_step_equals_module_and_torch_adam():
    module = reference.module()
    params = reference.params_of(module)
    model = models.get("cnn")
    batch = _batch(masked=0)

    # grads: an "optimizer" that returns zero updates and keeps the gradients as its state
    capture = optim.GradientTransformation(lambda p: tree.zeros_like(p), lambda g, s, p=None: (tree.zeros_like(g), g))
    step = train.train_step(model, capture, make_loss(LossConfig()))
    state, m = step(train.init_state(model, capture, random.key(0), params=params), batch)
    grads = state.opt_state

    x = batch.images.float() / 255.0
    ref_loss = F.cross_entropy(module(x), batch.labels)
    ref_loss.backward()
    assert torch.allclose(m["loss"], ref_loss.detach(), atol=1e-6)
    ref_grads = reference.grads_of(module)
    for name, g in tree.flatten_names(grads).items():
        assert torch.allclose(g, tree.flatten_names(ref_grads)[name], atol=1e-7, rtol=1e-5), name
    ref_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), 1e9)
    assert torch.allclose(m["grad_norm"], ref_norm, rtol=1e-5)

    # params after each of three Adam steps: step 1 to 1e-7; later steps to 1e-5, because a weight whose
    # gradient was exactly 0 at step 1 and ~1e-10 at step 2 gets an update of size lr * g / (|g| + eps) that
    # is sensitive to the last bit of g (measured: one fc entry moves 1.8e-6, the rest stay below 3e-8)
    adam = optim.adam(1e-3)
    step = train.train_step(model, adam, make_loss(LossConfig()))
    state = train.init_state(model, adam, random.key(0), params=reference.params_of(reference.module()))
    module = reference.module()
    torch_opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    for i in range(3):
        b = _batch(seed=10 + i, masked=0)
        state, _ = step(state, b)
        torch_opt.zero_grad()
        F.cross_entropy(module(b.images.float() / 255.0), b.labels).backward()
        torch_opt.step()
        ref = reference.params_of(module)
        for name, p in tree.flatten_names(state.params).items():
            atol = 1e-7 if i == 0 else 1e-5  # an update is lr = 1e-3: a wrong step is far outside both
            assert torch.allclose(p, tree.flatten_names(ref)[name], atol=atol, rtol=0), (i, name)


# ---------------------------------------------------------------------------------------------- eval and predict


def test_eval_step_sums_and_confusion_ignore_masked_samples(seed):
    model, params = seed["model"], seed["first"][0].params
    batch = _batch(48, seed=5, masked=9)
    out = train.eval_step(model, 10)(params, {}, batch)
    logits = model.apply(params, {}, batch.images.float() / 255.0)[0]
    pred = logits.argmax(-1)
    confusion = torch.zeros(10, 10, dtype=torch.int64)
    correct = 0
    for t, p, keep in zip(batch.labels.tolist(), pred.tolist(), batch.mask.tolist()):
        if keep:
            confusion[t, p] += 1
            correct += t == p
    assert out["confusion"].dtype == torch.int64
    assert torch.equal(out["confusion"], confusion)
    assert int(out["confusion"].sum()) == int(out["count"]) == 39
    assert int(out["correct"]) == correct
    ref = F.cross_entropy(logits[batch.mask], batch.labels[batch.mask], reduction="sum")
    assert torch.allclose(out["loss_sum"], ref, rtol=1e-5)


def test_predict_shapes_and_values(seed):
    model, params = seed["model"], seed["first"][0].params
    images = _batch(70, seed=6).images
    logits = train.predict(model, params, {}, images, batch_size=32)
    assert logits.shape == (70, 10) and not logits.requires_grad
    ref = model.apply(params, {}, images.float() / 255.0)[0]
    assert torch.allclose(logits, ref, atol=1e-5)
    assert train.predict(model, params, {}, images[:0]).shape[0] == 0


# ---------------------------------------------------------------------------------------------- fit


def _blobs(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four separable classes: a bright blob in one quadrant, jittered, over noise; uint8 (n, 1, 28, 28)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    centres = torch.tensor([[7.0, 7.0], [7.0, 20.0], [20.0, 7.0], [20.0, 20.0]])[labels]
    centres = centres + torch.randint(-2, 3, (n, 2), generator=g)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    d2 = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2
    img = 255 * torch.exp(-d2 / 8.0) + 40 * torch.rand(n, 28, 28, generator=g)
    return img.clamp(0, 255).to(torch.uint8)[:, None], labels


class Recorder(train.Callback):
    def __init__(self):
        self.events = []

    def on_epoch_start(self, epoch, num_batches):
        self.events.append(("start", epoch, num_batches))

    def on_dispatch(self, epoch):
        self.events.append(("dispatch", epoch))

    def on_step(self, epoch, metrics):
        assert all(isinstance(v, float | int) for v in metrics.values())  # host numbers, never tensors
        self.events.append(("step", epoch, metrics["count"], metrics["steps"], metrics["loss"]))

    def on_epoch_end(self, epoch, state, record):
        self.events.append(("end", epoch, record["epoch"]))


def _small_cnn_step(lr: float = 3e-3):
    model = models.get("cnn", CNNConfig(channels=(8, 16), hidden=32, num_classes=4))
    opt = optim.adam(lr)
    return model, opt, train.train_step(model, opt, make_loss(LossConfig()))


def _epoch_batches(images, labels, key, bs=32):
    def batches(epoch):
        order = random.permutation(random.fold_in(key, epoch), len(labels)).reshape(-1, bs)
        return [Batch(images[i], labels[i], torch.ones(bs, dtype=torch.bool)) for i in order]

    return batches


def test_fit_learns_separable_blobs():
    images, labels = _blobs()
    model, opt, step = _small_cnn_step()
    state = train.init_state(model, opt, random.key(0))
    evaluate_step = train.eval_step(model, 4)
    full = Batch(images, labels, torch.ones(len(labels), dtype=torch.bool))

    def evaluate(s):
        out = evaluate_step(s.params, s.model_state, full)
        return {"val_accuracy": float(out["correct"]) / float(out["count"])}

    before = evaluate(state)["val_accuracy"]
    rec = Recorder()
    state, history = train.fit(
        state, step, _epoch_batches(images, labels, random.key(1)), epochs=3, evaluate=evaluate, callbacks=[rec]
    )
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["step"] == 24 and int(state.step) == 24
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[0]["train_loss"] < 1.5  # ln 4 = 1.39 at chance
    assert history[-1]["val_accuracy"] >= 0.95 > before
    assert rec.events[0] == ("start", 0, 8) and rec.events[-1] == ("end", 2, 3)
    assert [e for e in rec.events if e[0] == "dispatch"] == [("dispatch", k // 8) for k in range(24)]  # every step
    rec.events = [e for e in rec.events if e[0] != "dispatch"]
    progress = [e for e in rec.events if e[0] == "step"]  # every sync_every (50) steps and at the epoch's end
    assert [(e[1], e[2], e[3]) for e in progress] == [(0, 256.0, 8), (1, 256.0, 8), (2, 256.0, 8)]
    assert progress[0][4] == pytest.approx(history[0]["train_loss"])


def test_fit_resumes_from_start_epoch():
    images, labels = _blobs(64)
    model, opt, step = _small_cnn_step()
    batches = _epoch_batches(images, labels, random.key(1))
    s0 = train.init_state(model, opt, random.key(0))
    full, _ = train.fit(s0, step, batches, epochs=2)
    half, _ = train.fit(s0, step, batches, epochs=1)
    resumed, history = train.fit(half, step, batches, epochs=2, start_epoch=1)
    assert [h["epoch"] for h in history] == [2]
    _assert_trees_equal(full.params, resumed.params)


@pytest.mark.parametrize("sync_every", [1, 3, 50])
@pytest.mark.parametrize("cause", ["lr", "input"])
def test_fit_raises_non_finite_loss_with_last_good_state(cause, sync_every):
    """Checked every ``sync_every`` steps, the failure still names the first bad step and carries the state just
    before it: the loop replays the window since the last check."""
    images, labels = _blobs(64)
    model, opt, step = _small_cnn_step(lr=1e30 if cause == "lr" else 1e-3)
    state = train.init_state(model, opt, random.key(0))
    batches = _epoch_batches(images, labels, random.key(1))
    if cause == "input":
        good = batches

        def batches(epoch):
            out = good(epoch)
            bad = out[1].images.float()
            bad[0, 0, 0, 0] = float("nan")
            return [out[0], out[1]._replace(images=bad), *out[2:]]

    rec = Recorder()
    with pytest.raises(train.NonFiniteLoss, match="non-finite") as err:
        train.fit(state, step, batches, epochs=2, sync_every=sync_every, callbacks=[rec])
    e = err.value
    assert e.epoch == 0 and e.step == int(e.state.step) == 1
    assert all(bool(torch.isfinite(p).all()) for p in tree.leaves(e.state.params))
    replay, _ = step(state, batches(0)[0])
    _assert_trees_equal(e.state.params, replay.params)  # the state after the last good step
    assert [ev for ev in rec.events if ev[0] == "end"] == []  # no checkpoint of an unchecked state


def test_fit_stops_at_a_finite_loss_whose_gradient_is_not():
    """A loss can be finite while its gradient is NaN (``sqrt`` at 0): the step then writes NaN parameters, which
    the loop must neither check in nor hand a checkpoint; it raises with the state before that step."""
    images, labels = _blobs(64)
    model, opt, _ = _small_cnn_step()
    base = make_loss(LossConfig())
    bad_loss = lambda logits, y, mask: base(logits, y, mask) + torch.sqrt((logits * 0).sum().abs())
    step = train.train_step(model, opt, bad_loss)
    state = train.init_state(model, opt, random.key(0))
    first, m = step(state, _epoch_batches(images, labels, random.key(1))(0)[0])
    assert math.isfinite(float(m["loss"])) and not math.isfinite(float(m["grad_norm"]))
    assert not all(bool(torch.isfinite(p).all()) for p in tree.leaves(first.params))
    rec = Recorder()
    with pytest.raises(train.NonFiniteLoss, match="gradient became non-finite at epoch 0, step 0") as err:
        train.fit(state, step, _epoch_batches(images, labels, random.key(1)), epochs=1, callbacks=[rec])
    assert err.value.state is state and [ev for ev in rec.events if ev[0] == "end"] == []


def test_fit_carries_the_checked_state_when_the_replay_stays_finite():
    """A failure the replay does not reproduce (a non-deterministic kernel) carries the last checked state."""
    images, labels = _blobs(256)
    model, opt, step = _small_cnn_step()
    calls = []

    def flaky(state, batch):  # NaN on the 5th call only
        calls.append(1)
        new, m = step(state, batch)
        return new, {**m, "loss": m["loss"] * float("nan")} if len(calls) == 5 else m

    state = train.init_state(model, opt, random.key(0))
    with pytest.raises(train.NonFiniteLoss) as err:
        train.fit(state, flaky, _epoch_batches(images, labels, random.key(1)), epochs=1, sync_every=3)
    assert err.value.step == int(err.value.state.step) == 3  # checked after step 3; steps 4-6 replayed finite
    assert len(calls) == 6 + 3


def test_fit_reports_progress_every_sync_every_steps():
    images, labels = _blobs(256)
    model, opt, step = _small_cnn_step()
    rec = Recorder()
    state = train.init_state(model, opt, random.key(0))
    _, history = train.fit(
        state, step, _epoch_batches(images, labels, random.key(1)), epochs=2, sync_every=3, callbacks=[rec]
    )
    progress = [e for e in rec.events if e[0] == "step"]
    assert [(e[1], e[3]) for e in progress] == [(0, 3), (0, 3), (0, 2), (1, 3), (1, 3), (1, 2)]
    assert all(e[2] == 32.0 * e[3] for e in progress)
    first = [e for e in progress if e[1] == 0]
    assert sum(e[2] * e[4] for e in first) / 256 == pytest.approx(history[0]["train_loss"])
    with pytest.raises(ValueError, match="sync_every"):
        train.fit(state, step, _epoch_batches(images, labels, random.key(1)), epochs=1, sync_every=0)
    _, empty = train.fit(state, step, lambda epoch: [], epochs=1)
    assert empty[0]["step"] == 0 and empty[0]["train_loss"] == 0.0


class HostTransfers(torch.overrides.TorchFunctionMode):
    """Counts the tensor methods that copy values to the host (each one is a device sync on a GPU)."""

    NAMES = frozenset(
        {"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__format__", "__repr__"}
    )

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.NAMES
        return func(*args, **(kwargs or {}))


def _count_transfers(steps: int, sync_every: int, monkeypatch) -> tuple[int, int]:
    """(host transfers, device synchronisations) of a two-epoch ``fit`` of ``steps`` steps per epoch."""
    model = models.get("cnn", CNNConfig(channels=(2, 4), hidden=0, num_classes=4))
    opt = optim.adam(1e-3)
    step = train.train_step(model, opt, make_loss(LossConfig()))
    pool = [_batch(4, seed=i, masked=0) for i in range(steps)]
    pool = [b._replace(labels=b.labels % 4) for b in pool]
    syncs = []
    monkeypatch.setattr(train.runtime, "synchronize", lambda device: syncs.append(device))
    state = train.init_state(model, opt, random.key(0))
    with HostTransfers() as counter:
        train.fit(state, step, lambda epoch: pool, epochs=2, sync_every=sync_every, callbacks=[Recorder()])
    return counter.count, len(syncs)


def test_fit_transfers_to_the_host_a_fixed_number_of_times_per_epoch(monkeypatch):
    """Neither the loop nor the step reads a tensor back per step: ten or a hundred steps an epoch cost the same
    transfers (one per epoch with sync_every above the epoch length), and one synchronisation per epoch."""
    assert _count_transfers(10, 1000, monkeypatch) == _count_transfers(100, 1000, monkeypatch) == (2, 2)
    transfers, syncs = _count_transfers(100, 30, monkeypatch)
    assert (transfers, syncs) == (2 * 4, 2)  # ceil(100 / 30) checks per epoch


def test_early_stopping_stops_and_validates():
    images, labels = _blobs(64)
    model, opt, step = _small_cnn_step()
    state = train.init_state(model, opt, random.key(0))
    scores = iter([0.5, 0.7, 0.6, 0.7, 0.65, 0.9, 0.95])
    _, history = train.fit(
        state,
        step,
        _epoch_batches(images, labels, random.key(1)),
        epochs=7,
        evaluate=lambda s: {"val_macro_f1": next(scores)},
        callbacks=[train.EarlyStopping(patience=3)],
    )
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]  # best at epoch 2, three epochs without improvement
    es = train.EarlyStopping(monitor="val_loss", patience=1, mode="min")
    assert not es.on_epoch_end(0, state, {"val_loss": 1.0})
    assert not es.on_epoch_end(1, state, {"val_loss": 0.5})
    assert es.on_epoch_end(2, state, {"val_loss": 0.6})
    with pytest.raises(KeyError, match="val_loss"):
        train.EarlyStopping(monitor="val_loss").on_epoch_end(0, state, {"val_accuracy": 1.0})
    with pytest.raises(ValueError, match="mode"):
        train.EarlyStopping(mode="up")


# ---------------------------------------------------------------------------------------------- batch errors


def test_batch_errors_are_clear(seed):
    step, state, b = seed["step"], seed["state"], seed["batch"]
    with pytest.raises(TypeError, match=r"int64.*labels\.long"):
        step(state, b._replace(labels=b.labels.int()))
    with pytest.raises(ValueError, match=r"labels \(32, 1\)"):
        step(state, b._replace(labels=b.labels[:, None]))
    with pytest.raises(ValueError, match=r"mask \(31,\)"):
        step(state, b._replace(mask=b.mask[:31]))
    with pytest.raises(TypeError, match="Batch"):
        step(state, (b.images, b.labels, b.mask))
    with pytest.raises(TypeError, match="int64"):
        train.eval_step(seed["model"], 10)(state.params, {}, b._replace(labels=b.labels.float()))
