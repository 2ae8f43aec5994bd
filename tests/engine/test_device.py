"""Devices: everything a run makes follows its key's or its input's device (docs/architecture.md, "Devices").

Without a GPU the ``meta`` device checks it: a path run on meta tensors that returns a CPU tensor created that
tensor on the host. Every family's ``init_state``, the eager ``train_step`` (dropout, batch norm, every
augmentation), ``eval_step`` and every loss run here on meta. Where CUDA is available, one step of each family
with dropout and batch norm, eager and compiled, must equal the CPU step; elsewhere those tests skip.
"""

import contextlib
import dataclasses
import inspect

import pytest
import torch

from hwr import losses, models, nn, optim, random, tree
from hwr.data import augment
from hwr.data.batches import Batch
from hwr.engine import perf, runtime, stacked, train

META = torch.device("meta")
B = 8

# small sizes per known family (fields a family lacks are ignored); dropout and batch norm on where offered
SMALL = {
    "cnn": {"channels": (4, 8), "hidden": 16},
    "rnn": {"hidden": 16, "num_layers": 2},
    "vit": {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32},
}
EXTRAS = {"dropout": 0.25, "norm": "batch"}
ALL_ON = augment.AugmentConfig(
    rotation=10, translate=2, scale=0.1, shear=5, elastic_alpha=8, erase_prob=0.5, hflip=True, blur=1.5
)


def _config(name: str, extras: bool):
    """The family's default config, shrunk by ``SMALL`` and with ``EXTRAS`` where the family has those fields
    (and accepts the value)."""
    cfg = models.config_from_dict(name)
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes = {k: v for k, v in SMALL.get(name, {}).items() if k in fields}
    cfg = dataclasses.replace(cfg, **changes)
    for k, v in (EXTRAS if extras else {}).items():
        if k in fields:
            with contextlib.suppress(ValueError):  # the family spells it otherwise
                cfg = dataclasses.replace(cfg, **{k: v})
    return cfg


FAMILIES = [pytest.param(n, e, id=f"{n}{'+dropout+norm' if e else ''}") for n in models.names() for e in (False, True)]


def _off_device(t, device: torch.device) -> list[str]:
    """Dotted names of the tensor leaves of ``t`` not on ``device`` (empty: all there)."""
    return [
        k for k, v in tree.flatten_names(t, strict=False).items() if isinstance(v, torch.Tensor) and v.device != device
    ]


def _image_shape(cfg) -> tuple[int, int, int]:
    """``(C, H, W)`` of the family's input: square ``image_size`` images, or ``height`` x 64 strips (strings)."""
    c = getattr(cfg, "in_channels", 1)
    if hasattr(cfg, "image_size"):
        return c, cfg.image_size, cfg.image_size
    return c, getattr(cfg, "height", 28), 64


def _batch(device, cfg, n: int = B) -> Batch:
    images = (random.uniform(random.key(1, device=device), (n, *_image_shape(cfg))) * 255).to(torch.uint8)
    labels = random.randint(random.key(2, device=device), (n,), 0, getattr(cfg, "num_classes", 10))
    return Batch(images, labels, torch.arange(n, device=device) < n - 1)


def _optimizer():
    """A chain that exercises schedule constants, clipping, weight decay and Adam's float64 counter."""
    return optim.chain(
        optim.clip_by_global_norm(1.0), optim.add_decayed_weights(1e-4), optim.adam(optim.onecycle(1e-3, 10))
    )


def _classifier(model, cfg) -> bool:
    """Whether the family's logits are ``(B, classes)``, not per-frame ``(B, T, classes)`` scores for CTC."""
    state = train.init_state(model, optim.sgd(0.1), random.key(0, device=META))
    logits, _ = model.apply(state.params, state.model_state, _batch(META, cfg).images.float())
    return logits.dim() == 2


# ---------------------------------------------------------------------------------------------- meta: host tensors


def test_random_follows_the_key():
    k = random.key(0, device=META)
    assert k.device == META
    draws = {
        "split": random.split(k, 3),
        "fold_in": random.fold_in(k, 5),
        "fold_in_tensor": random.fold_in(k, torch.zeros((), dtype=torch.int64, device=META)),
        "bits": random.bits(k, (4,)),
        "uniform": random.uniform(k, (4,)),
        "normal": random.normal(k, (4,)),
        "bernoulli": random.bernoulli(k, 0.3, (4,)),
        "randint": random.randint(k, (4,), 0, 7),
        "permutation": random.permutation(k, 9),
    }
    assert _off_device(draws, META) == []


@pytest.mark.parametrize("name", models.names())
def test_every_family_creates_its_state_on_a_given_device(name):
    """The Model contract: ``init_state(device=None)`` (the state has no key, so it is told where to live)."""
    model = models.get(name, _config(name, True))
    assert "device" in inspect.signature(model.init_state).parameters, f"{name}: init_state needs device=None"
    assert _off_device(model.init_state(device=META), META) == []


@pytest.mark.parametrize(("name", "extras"), FAMILIES)
def test_init_state_is_on_the_key_device(name, extras):
    cfg = _config(name, extras)
    model = models.get(name, cfg)
    state = train.init_state(model, _optimizer(), random.key(0, device=META))
    assert _off_device(state, META) == []
    assert tree.num_params(state.params) > 0


@pytest.mark.parametrize(("name", "extras"), FAMILIES)
def test_train_and_eval_step_stay_on_the_device(name, extras):
    cfg = _config(name, extras)
    model = models.get(name, cfg)
    opt = _optimizer()
    state = train.init_state(model, opt, random.key(0, device=META))
    batch = _batch(META, cfg)
    if not _classifier(model, cfg):  # a sequence family: per-frame scores, trained through the CTC loss
        _check_sequence_family(model, state, batch)
        return
    transform = augment.make_transform(ALL_ON, 0.13, 0.31)
    new, metrics = train.train_step(model, opt, losses.cross_entropy, transform=transform)(state, batch)
    assert _off_device(new, META) == [] and _off_device(metrics, META) == []
    sums = train.eval_step(model, getattr(cfg, "num_classes", 10), transform=transform)(
        new.params, new.model_state, batch
    )
    assert _off_device(sums, META) == []


def _check_sequence_family(model, state, batch):
    """Forward in training (dropout keyed on meta) and the CTC gradient, all on the device."""
    from hwr import ctc

    x = batch.images.float()

    def objective(params):
        logits, new_state = model.apply(params, state.model_state, x, key=state.key, train=True)  # (B, T, C)
        b, t, _ = logits.shape
        targets = torch.zeros(b, 3, dtype=torch.int64, device=x.device)
        lengths = torch.full((b,), t, dtype=torch.int64, device=x.device)
        return ctc.ctc_loss(
            logits, targets, lengths, torch.full_like(lengths, 3), blank=logits.shape[-1] - 1
        ), new_state

    grads, new_state = torch.func.grad(objective, has_aux=True)(state.params)
    assert _off_device(grads, META) == [] and _off_device(new_state, META) == []


def test_augment_with_everything_on_stays_on_the_device():
    x = torch.empty(B, 1, 28, 28, device=META)
    assert augment.augment(random.key(0, device=META), x, ALL_ON).device == META
    assert augment.make_transform(ALL_ON, 0.1, 0.3)(random.key(0, device=META), x.to(torch.uint8)).device == META


def _trials(device, k: int = 3):
    """K trials of one structure on ``device`` (the small CNN with dropout and batch norm, every augmentation, its
    own learning rate and rotation each): the ``hyper_step``, states, batches and values."""
    cfg = _config("cnn", True)
    model = models.get("cnn", cfg)

    def parts(hp):
        transform = augment.make_transform(ALL_ON, 0.13, 0.31, hp["augment"])
        return optim.adam(hp["lr"]), train.classifier(losses.cross_entropy, transform=transform)

    f64 = dict(dtype=torch.float64, device=device)
    hps = [
        {
            "lr": torch.tensor(1e-3 * (i + 1), **f64),
            "augment": augment.hyperparameters(dataclasses.replace(ALL_ON, rotation=5.0 * (i + 1)), (28, 28), device),
        }
        for i in range(k)
    ]
    states = [train.init_state(model, optim.adam(1e-3), random.key(i, device=device)) for i in range(k)]
    batches = [_batch(device, cfg) for _ in range(k)]
    return train.hyper_step(model, parts), states, batches, hps


def test_vmapped_trials_stay_on_the_device():
    core, states, batches, hps = _trials(META)
    new, metrics = stacked.vmapped(core)(*stacked.stack_trials(states, batches, hps))
    assert _off_device(new, META) == [] and _off_device(metrics, META) == []
    assert metrics["loss"].shape == (3,)


def test_augment_and_dropout_refuse_a_key_on_another_device():
    x = torch.empty(B, 1, 28, 28, device=META)
    with pytest.raises(ValueError, match=r"augment: the key is on cpu but the data on meta"):
        augment.augment(random.key(0), x, ALL_ON)
    with pytest.raises(ValueError, match=r"dropout: the key is on cpu"):
        nn.dropout(x, 0.5, key=random.key(0), train=True)


def _loss_configs() -> list[losses.LossConfig]:
    fields = {f.name for f in dataclasses.fields(losses.LossConfig)}
    out = [
        losses.LossConfig(weighting=w, label_smoothing=s)
        for w in ("none", "inverse", "effective", "logit_adjust")
        for s in (0.0, 0.1)
    ]
    if "defer" in fields:  # deferred re-weighting switches on the step counter
        out += [
            losses.LossConfig(weighting="inverse", defer=0.5),
            losses.LossConfig(weighting="logit_adjust", defer=0.5),
        ]
    return out


@pytest.mark.parametrize("config", _loss_configs(), ids=lambda c: f"{c.weighting}-{c.label_smoothing}")
def test_every_loss_stays_on_the_device(config):
    kwargs = {"total_steps": 10} if "defer" in {f.name for f in dataclasses.fields(losses.LossConfig)} else {}
    loss = losses.make_loss(config, [5, 3, 1, 1], device=META, **kwargs)
    logits = torch.empty(B, 4, device=META)
    labels = torch.zeros(B, dtype=torch.int64, device=META)
    mask = torch.ones(B, dtype=torch.bool, device=META)
    extra = (
        (torch.zeros((), dtype=torch.int64, device=META),) if isinstance(loss, getattr(losses, "Scheduled", ())) else ()
    )
    value = loss(logits, labels, mask, *extra)
    assert value.device == META and value.shape == ()
    soft = torch.empty(B, 4, device=META)  # soft targets (mixup) where the loss takes them
    if config.weighting != "logit_adjust":
        assert loss(logits, soft, mask, *extra).device == META


def test_cross_entropy_and_logit_adjustment_on_meta():
    logits, labels = torch.empty(B, 4, device=META), torch.zeros(B, dtype=torch.int64, device=META)
    w = torch.ones(4, device=META)
    assert losses.cross_entropy(logits, labels, class_weights=w, label_smoothing=0.1).device == META
    assert losses.logit_adjusted_cross_entropy(logits, labels, class_prior=w / 4).device == META


def test_autocast_takes_the_input_device_type():
    model = models.get("cnn", _config("cnn", False))
    params = model.init(random.key(0))
    seen = []

    def spy(params, state, x, **kw):
        seen.append(torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None)
        return model.apply(params, state, x, **kw)

    logits, _ = perf.autocast(model._replace(apply=spy)).apply(params, {}, torch.rand(2, 1, 28, 28))
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert not torch.is_autocast_enabled("cuda")  # CPU input: CUDA autocast untouched


def test_resolve_device():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_device("auto").type == want
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        runtime.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            runtime.resolve_device("cuda")
    if not (torch.backends.mps.is_available()):
        with pytest.raises(ValueError, match="no MPS device"):
            runtime.resolve_device("mps")  # torch.device accepts it; the machine must have it
    runtime.synchronize("cpu")
    runtime.synchronize(META)


# ---------------------------------------------------------------------------------------------- CUDA == CPU


def _to(t, device):
    return tree.map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, t)


@pytest.fixture
def exact_fp32():
    """CUDA float32 without TF32 (cuDNN convolutions use it by default), so GPU and CPU compute alike."""
    runtime.set_tf32(False)
    yield
    runtime.set_tf32(False)


def _draws(k):
    return [
        random.bits(k, (1000,)),
        random.uniform(k, (1000,)),
        random.normal(k, (1000,)),
        random.permutation(k, 1000),
        random.split(k, 3),
        random.fold_in(k, 3),
    ]


@pytest.mark.cuda
def test_random_draws_are_equal_on_cuda_and_cpu():
    for got, want in zip(_draws(random.key(7, device="cuda")), _draws(random.key(7)), strict=True):
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-7 if want.is_floating_point() else 0)


@pytest.mark.cuda
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", models.names())
def test_one_step_on_cuda_equals_the_cpu_step(name, compiled, exact_fp32):
    cfg = _config(name, True)
    model = models.get(name, cfg)
    if not _classifier(model, cfg):
        pytest.skip(f"{name} is a sequence family: its CTC step is not a (B, classes) train_step")
    opt = optim.adam(1e-3)
    step = train.train_step(model, opt, losses.cross_entropy)
    cpu_state = train.init_state(model, opt, random.key(0))
    cpu_batch = _batch("cpu", cfg, 16)
    want, want_m = step(cpu_state, cpu_batch)
    gpu_state = train.init_state(model, opt, random.key(0, device="cuda"))
    for a, b in zip(tree.leaves(gpu_state), tree.leaves(cpu_state), strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0)  # init on the GPU is the CPU init, bit for bit
    fn = train.compile(step) if compiled else step
    got, got_m = fn(gpu_state, _to(cpu_batch, "cuda"))
    assert _off_device(got, got.step.device) == [] and got.step.device.type == "cuda"
    for (k, a), b in zip(tree.flatten_names(got, strict=False).items(), tree.leaves(want), strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=2e-5, msg=k)
    torch.testing.assert_close(got_m["loss"].cpu(), want_m["loss"], rtol=1e-5, atol=1e-5)
    assert int(got_m["correct"]) == int(want_m["correct"])


@pytest.mark.cuda
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_vmapped_trials_on_cuda_equal_separate_steps(compiled, exact_fp32):
    """K trials in one vmapped step on the GPU (what gpu_check's vmap stage times) equal K separate steps there."""
    core, states, batches, hps = _trials(torch.device("cuda"))
    step = stacked.vmapped(core)
    step = train.compile(step) if compiled else step
    new, metrics = step(*stacked.stack_trials(states, batches, hps))
    assert _off_device(new, new.step.device) == [] and new.step.device.type == "cuda"
    for i, (got, state, batch, hp) in enumerate(zip(tree.unstack(new), states, batches, hps, strict=True)):
        want, want_m = core(state, batch, hp)
        for (name, a), b in zip(tree.flatten_names(got, strict=False).items(), tree.leaves(want), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=f"trial {i}: {name}")
        assert int(metrics["correct"][i]) == int(want_m["correct"])


@pytest.mark.cuda
def test_fit_on_cuda_matches_the_cpu_fit(exact_fp32):
    cfg = _config("cnn", True)
    model = models.get("cnn", cfg)
    opt = optim.adam(1e-3)
    step = train.train_step(model, opt, losses.cross_entropy)
    results = {}
    for device in ("cpu", "cuda"):
        pool = [_batch(device, cfg, 16) for _ in range(4)]
        state = train.init_state(model, opt, random.key(0, device=device))
        state, history = train.fit(state, step, lambda epoch, pool=pool: pool, epochs=2, sync_every=3)
        results[device] = (state, history)
    (cpu, h_cpu), (gpu, h_gpu) = results["cpu"], results["cuda"]
    assert [h["step"] for h in h_gpu] == [4, 8]
    for a, b in zip(h_gpu, h_cpu, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    for a, b in zip(tree.leaves(gpu.params), tree.leaves(cpu.params), strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cuda_graph_step_is_pure_and_equals_the_eager_step(exact_fp32):
    """``mode="reduce-overhead"`` replays a CUDA graph; an older state stays readable after later replays."""
    cfg = _config("cnn", True)
    model = models.get("cnn", cfg)
    opt = optim.adam(1e-3)
    step = train.train_step(model, opt, losses.cross_entropy)
    graphed = train.compile(step, mode="reduce-overhead")
    state = train.init_state(model, opt, random.key(0, device="cuda"))
    batches = [_batch("cuda", cfg, 16) for _ in range(3)]
    eager, states = state, [state]
    for b in batches:
        states.append(graphed(states[-1], b)[0])
        eager, _ = step(eager, b)
    for a, b in zip(tree.leaves(states[-1].params), tree.leaves(eager.params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)
    first = step(state, batches[0])[0]  # states[1] was written by the first replay: still intact
    for a, b in zip(tree.leaves(states[1].params), tree.leaves(first.params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)
