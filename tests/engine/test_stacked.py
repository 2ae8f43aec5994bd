"""hwr.engine.stacked and execution.stacked_step: K trials of one structure in one vmapped step equal K separate
steps (each trial its own seed, data order, learning rate, augmentation magnitude and tau), the step is pure, it
compiles as one graph, a compiled stacked step is shared per structure, and the error paths name the fix."""

import dataclasses

import pytest
import torch
from tiny import TINY_CNN

from hwr import losses, models, optim, random, tree
from hwr.data import augment as aug
from hwr.data.batches import Batch
from hwr.engine import execution as ex
from hwr.engine import stacked, train
from hwr.engine.execution import Execution

K, B, STEPS = 3, 16, 3
OPTIM = optim.OptimConfig("adamw", 1e-3, "cosine", weight_decay=1e-4)
LOSS = losses.LossConfig(weighting="logit_adjust")
AUGMENT = aug.AugmentConfig(rotation=10.0, translate=1.0)


def _parts(hp):
    optimizer = optim.from_config(OPTIM, 0, hp=hp["optim"])
    transform = aug.make_transform(AUGMENT, hp["mean"], hp["std"], hp["augment"])
    return optimizer, train.classifier(losses.make_loss(LOSS, hp=hp["loss"]), transform=transform)


def _hp(lr: float, rotation: float, tau: float) -> dict:
    scalar = lambda x: torch.tensor(x, dtype=torch.float64)
    return {
        "optim": optim.hyperparameters(dataclasses.replace(OPTIM, lr=lr), 20),
        "loss": losses.hyperparameters(losses.LossConfig("logit_adjust", tau=tau), torch.arange(1, 11)),
        "augment": aug.hyperparameters(aug.AugmentConfig(rotation=rotation, translate=1.0), (28, 28)),
        "mean": scalar(0.13),
        "std": scalar(0.31),
    }


def _batches(seed: int, n: int = STEPS):
    g = torch.Generator().manual_seed(seed)
    return [
        Batch(
            torch.randint(0, 256, (B, 1, 28, 28), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (B,), generator=g),
            torch.arange(B) < B - seed,  # a different padding per trial
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def trials():
    """K trials of one structure: seeds 0..K-1 (initial parameters, keys, batches), learning rates, rotations and
    taus of their own."""
    model = models.get("cnn", TINY_CNN)
    hps = [_hp(lr, rot, tau) for lr, rot, tau in ((3e-3, 10.0, 1.0), (1e-3, 5.0, 0.5), (2e-3, 15.0, 1.5))]
    states = [train.init_state(model, optim.from_config(OPTIM, 20), random.key(seed), params=None) for seed in range(K)]
    return {"model": model, "hps": hps, "states": states, "batches": [_batches(seed) for seed in range(K)]}


def _separately(core, t):
    """Each trial on its own: STEPS steps of ``core``, its final state and every step's metrics."""
    out = []
    for state, batches, hp in zip(t["states"], t["batches"], t["hps"]):
        ms = []
        for b in batches:
            state, m = core(state, b, hp)
            ms.append(m)
        out.append((state, ms))
    return out


def _together(step, t):
    states, _, hps = stacked.stack_trials(t["states"], [bs[0] for bs in t["batches"]], t["hps"])
    ms = []
    for i in range(STEPS):
        states, m = step(states, tree.stack([bs[i] for bs in t["batches"]]), hps)
        ms.append(m)
    return states, ms


def _assert_equal_to_separate(states, ms, separate, atol=1e-6):
    for k, (state, want) in enumerate(separate):
        got = tree.unstack(states)[k]
        for name, x in tree.flatten_names(state, strict=False).items():
            torch.testing.assert_close(tree.flatten_names(got, strict=False)[name], x, rtol=1e-5, atol=atol, msg=name)
        for i, m in enumerate(want):
            for name in ("correct", "count"):
                assert torch.equal(ms[i][name][k], m[name]), (k, i, name)
            for name in ("loss", "loss_sum", "grad_norm"):
                torch.testing.assert_close(ms[i][name][k], m[name], rtol=1e-5, atol=1e-6)


def test_vmapped_step_equals_k_separate_steps(trials):
    core = train.hyper_step(trials["model"], _parts)
    separate = _separately(core, trials)
    states, ms = _together(stacked.vmapped(core), trials)
    _assert_equal_to_separate(states, ms, separate)
    finals = [s.params["head"]["kernel"] for s, _ in separate]  # the trials really differ
    assert not torch.allclose(finals[0], finals[1]) and not torch.allclose(finals[1], finals[2])
    assert states.step.tolist() == [STEPS] * K


def test_vmapped_step_is_pure(trials):
    states, batches, hps = stacked.stack_trials(trials["states"], [bs[0] for bs in trials["batches"]], trials["hps"])
    before = tree.map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, (states, batches, hps))
    stacked.vmapped(train.hyper_step(trials["model"], _parts))(states, batches, hps)
    for a, b in zip(tree.leaves(before), tree.leaves((states, batches, hps))):
        assert (a is None and b is None) or torch.equal(a, b)


def test_compiled_vmapped_step_is_one_graph_equal_to_eager(trials):
    """fullgraph over vmap + grad_and_value + the augmentation (aot_eager: the trace, without inductor's cost)."""
    core = stacked.vmapped(train.hyper_step(trials["model"], _parts))
    torch._dynamo.reset()
    compiled = torch.compile(core, fullgraph=True, dynamic=False, backend="aot_eager")
    got, got_ms = _together(compiled, trials)
    want, want_ms = _together(core, trials)
    for a, b in zip(tree.leaves(got), tree.leaves(want)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [m["correct"].tolist() for m in got_ms] == [m["correct"].tolist() for m in want_ms]


def test_stacked_step_builds_from_an_execution_and_shares_the_compiled_step(trials, monkeypatch):
    """Eager: the vmapped step itself; compiled: one compile per structure and K, the second group reuses it, and
    every group's first step is checked against the eager one (aot_eager stands in for inductor)."""
    made = []

    def compile(fn, *, mode=None, **options):
        made.append(fn)
        return torch.compile(fn, fullgraph=True, dynamic=False, backend="aot_eager")

    monkeypatch.setattr(train, "compile", compile)
    ex.release_shared()
    states, batches, hps = stacked.stack_trials(trials["states"], [bs[0] for bs in trials["batches"]], trials["hps"])
    tuned = ex.Tuned(_parts, hps, "tiny")
    step, record = ex.stacked_step(Execution(device="cpu", compile=False), trials["model"], tuned, states, batches, hps)
    assert record == {"compile": False, "memory_format": "contiguous", "trials": K} and not made
    compiled = Execution(device="cpu")
    first, record = ex.stacked_step(compiled, trials["model"], tuned, states, batches, hps)
    assert record["compile"] and record["candidate"] == "inductor" and not record["shared"] and len(made) == 1
    again, record = ex.stacked_step(compiled, trials["model"], tuned, states, batches, hps)
    assert record["shared"] and again is first and len(made) == 1
    got, _ = first(states, batches, hps)
    want, _ = step(states, batches, hps)
    torch.testing.assert_close(got.params, want.params, rtol=1e-5, atol=1e-6)
    ex.release_shared()


def test_a_compiled_step_wrong_in_one_trial_is_refused_naming_it(trials, monkeypatch):
    """The first-step check compares every trial apart (a check over the stacked leaves dilutes one wrong trial
    among K): a build that gets trial 1 of 3 wrong (its updates scaled by 1.5) is refused, naming the trial."""

    def compile(fn, *, mode=None, **options):
        def wrong(states, batches, hps):
            new, metrics = fn(states, batches, hps)
            moved = lambda a, b: (
                a if not a.is_floating_point() else torch.cat([a[:1], b[1:2] + 1.5 * (a - b)[1:2], a[2:]])
            )
            return new._replace(params=tree.map(moved, new.params, states.params)), metrics

        return wrong

    monkeypatch.setattr(train, "compile", compile)
    ex.release_shared()
    states, batches, hps = stacked.stack_trials(trials["states"], [bs[0] for bs in trials["batches"]], trials["hps"])
    tuned = ex.Tuned(_parts, hps, "tiny-wrong")
    with pytest.raises(RuntimeError, match=r"trial 1 of the vmapped compiled step.*differs from eager: params\."):
        ex.stacked_step(Execution(device="cpu"), trials["model"], tuned, states, batches, hps)
    ex.release_shared()


def test_stacking_refuses_different_k_and_different_structures(trials):
    states, batches, hps = trials["states"], [bs[0] for bs in trials["batches"]], trials["hps"]
    with pytest.raises(ValueError, match="one state, one batch and one hp per trial"):
        stacked.stack_trials(states, batches[:2], hps)
    with pytest.raises(ValueError, match="one state, one batch and one hp per trial"):
        stacked.stack_trials([], [], [])
    wider = models.get("cnn", dataclasses.replace(TINY_CNN, hidden=32))
    other = train.init_state(wider, optim.from_config(OPTIM, 20), random.key(9))
    with pytest.raises(ValueError, match=r"different structure cannot share.*states.*fc\.kernel.*group the trials"):
        stacked.stack_trials([*states[:2], other], batches, hps)
    no_augment = {**hps[2], "augment": None}
    with pytest.raises(ValueError, match=r"different structure cannot share.*hps"):
        stacked.stack_trials(states, batches, [*hps[:2], no_augment])


def test_vmapped_step_refuses_inputs_of_different_k(trials):
    step = stacked.vmapped(train.hyper_step(trials["model"], _parts))
    states, batches, hps = stacked.stack_trials(trials["states"], [bs[0] for bs in trials["batches"]], trials["hps"])
    two = tree.map(lambda x: x[:2] if isinstance(x, torch.Tensor) else x, batches)
    with pytest.raises(ValueError, match=r"same K trials.*'batches': 2"):
        step(states, two, hps)
    with pytest.raises(ValueError, match="stacked along one leading axis"):
        step(trials["states"][0], trials["batches"][0][0], trials["hps"][0])  # one trial, not stacked
