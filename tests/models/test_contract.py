"""hwr.models: the registry, and the contract every registered family keeps (parametrised over ``models.names()``):
init on a key, apply's shapes and state, purity, determinism in the key, dropout that needs a key in training
only, clear input errors, meta-device tensors, one compiled graph of the engine's train step that matches eager,
and a compiled step that learns without recompiling. The step is the engine's one ``train_step`` over each
family's task objective: the classifier objective for cnn, rnn and vit, the CTC objective for crnn; no family is
skipped. Family-specific parity lives in tests/models/test_<family>.py."""

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from hwr import losses, models, optim, random, tree
from hwr.data.batches import Batch
from hwr.engine import train
from hwr.models.cnn import CNNConfig
from hwr.models.crnn import CRNNConfig
from hwr.models.rnn import RNNConfig
from hwr.models.vit import ViTConfig
from hwr.tasks.strings.step import StringBatch, ctc_objective

ATOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    """A family's tiny config (dropout on, so keys matter), its input ``(B, C, H, W)`` and logits shapes, and the
    optimizer its compiled train step learns with."""

    config: object
    input: tuple[int, ...]
    logits: tuple[int, ...]
    opt: optim.GradientTransformation


CASES = {
    "cnn": Case(
        CNNConfig(channels=(4, 8), hidden=16, dropout=0.1, image_size=8), (16, 1, 8, 8), (16, 10), optim.adam(1e-2)
    ),
    "rnn": Case(
        RNNConfig(cell="lstm", hidden=8, num_layers=2, bidirectional=True, dropout=0.1, image_size=8),
        (16, 1, 8, 8),
        (16, 10),
        optim.adam(3e-2),
    ),
    # eps above rounding noise: the key bias has exactly zero gradient (softmax ignores it), and plain Adam would
    # turn its rounding noise, which differs between eager and compiled kernels, into lr-sized updates of either sign
    "vit": Case(
        ViTConfig(patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.1, image_size=8),
        (16, 1, 8, 8),
        (16, 10),
        optim.adam(1e-2, eps=1e-4),
    ),
    "crnn": Case(
        CRNNConfig(channels=(4, 8), height=16, hidden=6, num_classes=5, dropout=0.1),
        (4, 1, 16, 24),
        (4, 6, 6),
        optim.adam(3e-2),
    ),
}
NAMES = models.names()


def _case(name: str) -> tuple[models.Model, Case]:
    case = CASES[name]
    return models.get(name, case.config), case


def _x(case: Case, seed: int = 1) -> torch.Tensor:
    return random.uniform(random.key(seed), case.input)


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lookup_and_errors():
    assert "cnn" in models.names()
    with pytest.raises(KeyError) as err:
        models.get("resnet")
    assert "resnet" in str(err.value) and "'cnn'" in str(err.value)
    with pytest.raises(KeyError, match="cnn"):
        models.config_from_dict("nope", {})
    with pytest.raises(TypeError, match="CNNConfig"):
        models.get("cnn", object())
    assert models.get("cnn", {"channels": [8, 16], "hidden": 32}).config == CNNConfig(channels=(8, 16), hidden=32)


def test_config_from_dict_rejects_unknown_fields_and_converts_lists():
    c = models.config_from_dict("cnn", {"channels": [16, 32], "norm": "batch"})
    assert c == CNNConfig(channels=(16, 32), norm="batch") and isinstance(c.channels, tuple)
    assert models.config_from_dict("cnn") == CNNConfig()
    with pytest.raises(ValueError) as err:
        models.config_from_dict("cnn", {"chanels": [16]})
    assert "chanels" in str(err.value) and "channels" in str(err.value)


# the default model of each family: an input it takes and its logits' shape
DEFAULTS = {
    "cnn": ((3, 1, 28, 28), (3, 10)),
    "rnn": ((3, 1, 28, 28), (3, 10)),
    "vit": ((2, 1, 28, 28), (2, 10)),
    "crnn": ((2, 1, 32, 64), (2, 16, 11)),
}


def test_every_family_is_registered_with_a_contract_case():
    assert set(NAMES) == set(CASES) == set(DEFAULTS), "give a new family a tiny Case here so the contract covers it"
    for name in NAMES:
        assert models.get(name, dataclasses.asdict(CASES[name].config)).config == CASES[name].config


@pytest.mark.parametrize("name", NAMES)
def test_default_model_name_config_and_logits(name):
    m = models.get(name)
    assert m.name == name and m.config == type(CASES[name].config)()
    shape, logits = DEFAULTS[name]
    assert m.apply(m.init(random.key(0)), m.init_state(), torch.rand(*shape))[0].shape == logits


# ------------------------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("name", NAMES)
def test_init_is_keyed(name):
    m, _ = _case(name)
    a, b, c = m.init(random.key(0)), m.init(random.key(0)), m.init(random.key(1))
    assert tree.structure(a) == tree.structure(b) == tree.structure(c)
    assert all(torch.equal(x, y) for x, y in zip(tree.leaves(a), tree.leaves(b), strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(tree.leaves(a), tree.leaves(c), strict=True))
    assert all(t.is_floating_point() and t.device.type == "cpu" for t in tree.leaves(a))


@pytest.mark.parametrize("name", NAMES)
def test_apply_shapes_state_and_purity(name):
    m, case = _case(name)
    params, state = m.init(random.key(0)), m.init_state()
    before, state0 = tree.map(torch.clone, params), tree.map(torch.clone, state)
    x = _x(case)
    x0 = x.clone()
    logits, new_state = m.apply(params, state, x, key=random.key(3), train=True)
    assert logits.shape == case.logits and logits.dtype == torch.float32
    assert tree.structure(new_state) == tree.structure(state)
    # pure: neither the parameters, the state passed in, nor the input changed
    assert all(torch.equal(p, q) for p, q in zip(tree.leaves(params), tree.leaves(before), strict=True))
    assert all(torch.equal(p, q) for p, q in zip(tree.leaves(state), tree.leaves(state0), strict=True))
    assert torch.equal(x, x0)
    assert m.apply(params, state, x)[0].shape == case.logits  # eval: no key needed


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_output_and_dropout_needs_a_key_in_training_only(name):
    m, case = _case(name)
    params, state = m.init(random.key(0)), m.init_state()
    x = _x(case)
    k1, k2 = random.split(random.key(2))
    a, _ = m.apply(params, state, x, key=k1, train=True)
    b, _ = m.apply(params, state, x, key=k1, train=True)
    c, _ = m.apply(params, state, x, key=k2, train=True)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    no_dropout = models.get(name, dataclasses.replace(case.config, dropout=0.0))
    eval_out = m.apply(params, state, x, key=k1)[0]
    torch.testing.assert_close(eval_out, no_dropout.apply(params, state, x)[0], atol=0, rtol=0)
    with pytest.raises(ValueError, match="needs key"):
        m.apply(params, state, x, train=True)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_raises_clear_errors(name):
    m, case = _case(name)
    params, state = m.init(random.key(0)), m.init_state()
    x = _x(case)
    with pytest.raises(ValueError, match="shape"):
        m.apply(params, state, x[:, 0])  # no channel axis
    with pytest.raises(ValueError, match="shape"):
        m.apply(params, state, torch.rand(*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3]))
    with pytest.raises(TypeError, match="float"):
        m.apply(params, state, (x * 255).to(torch.uint8))


@pytest.mark.parametrize("name", NAMES)
def test_meta_device_gives_only_meta_tensors(name):
    m, case = _case(name)
    params = m.init(random.key(0, device="meta"))
    state = tree.map(lambda t: t.to("meta"), m.init_state())
    assert all(t.device.type == "meta" for t in tree.leaves(params))
    x = torch.empty(case.input, device="meta")
    logits, new_state = m.apply(params, state, x, key=random.key(1, device="meta"), train=True)
    assert logits.device.type == "meta" and logits.shape == case.logits
    assert all(t.device.type == "meta" for t in tree.leaves(new_state))


# -------------------------------------------------------------------------- compiled (one compile per family)


def _bright_column_batch(case: Case) -> Batch:
    """Class = the bright column: every step sees it, so a few steps cut the loss."""
    n, _, _, w = case.input
    labels = random.randint(random.key(2), (n,), 0, min(case.logits[-1], w))
    noise = random.uniform(random.key(1), case.input) * 100
    images = torch.where(torch.arange(w)[None, None, None, :] == labels[:, None, None, None], 255.0, noise)
    return Batch(images.to(torch.uint8), labels, torch.ones(n, dtype=torch.bool))


def _bright_quarter_strings(case: Case) -> StringBatch:
    """A one-character string per image: the quarter of the image that is bright (a CTC task a few steps learn)."""
    n, _, _, w = case.input
    labels = random.randint(random.key(2), (n,), 0, 4)
    noise = random.uniform(random.key(1), case.input) * 60
    quarter = torch.arange(w)[None, None, None, :] // (w // 4)
    images = torch.where(quarter == labels[:, None, None, None], 255.0, noise).to(torch.uint8)
    ones = torch.ones(n, dtype=torch.int64)
    return StringBatch(images, labels[:, None], ones, torch.full((n,), w), ones.bool())


def _objective_and_batch(case: Case) -> tuple[train.Objective, object]:
    """The family's task objective (the engine's step takes it) and a learnable batch for it."""
    if isinstance(case.config, CRNNConfig):
        return ctc_objective(case.config, mean=0.2, std=0.3), _bright_quarter_strings(case)
    return train.classifier(losses.cross_entropy), _bright_column_batch(case)


@pytest.fixture(scope="module", params=NAMES)
def compiled(request):
    """The engine's train step over the family's task objective, compiled once with fullgraph."""
    m, case = _case(request.param)
    objective, batch = _objective_and_batch(case)
    step = train.train_step(m, case.opt, objective)
    state = train.init_state(m, case.opt, random.key(0))
    counters.clear()
    # traced to one graph by AOT autograd without code generation (inductor's builds are where CI's minutes go);
    # inductor's numerics are proved on the CNN's step by tests/engine/test_train.py, on the CRNN's by the strings
    # step's test, on the key-drawn dropout masks by tests/test_random.py
    fast = torch.compile(step, fullgraph=True, dynamic=False, backend="aot_eager")
    first = fast(state, batch)
    stats = {"graphs": counters["stats"]["unique_graphs"], "breaks": sum(counters["graph_break"].values())}
    return {
        "name": request.param,
        "eager": step(state, batch),
        "first": first,
        "stats": stats,
        "fast": fast,
        "state": state,
        "batch": batch,
    }


def _assert_close_trees(a, b, atol: float = ATOL) -> None:
    for name, leaf in tree.flatten_names(a).items():
        torch.testing.assert_close(leaf, tree.flatten_names(b)[name], atol=atol, rtol=1e-4, msg=name)


def test_compiles_to_one_graph_without_breaks(compiled):
    assert compiled["stats"] == {"graphs": 1, "breaks": 0}


def test_compiled_matches_eager(compiled):
    (fast_state, fast_m), (eager_state, eager_m) = compiled["first"], compiled["eager"]
    _assert_close_trees(fast_state.params, eager_state.params)
    torch.testing.assert_close(fast_m["loss"], eager_m["loss"], atol=ATOL, rtol=0)
    torch.testing.assert_close(fast_m["grad_norm"], eager_m["grad_norm"], atol=1e-4, rtol=1e-5)


def test_compiled_steps_reduce_the_loss_without_recompiling(compiled):
    state, batch = compiled["state"], compiled["batch"]
    first = None
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(25):
            state, m = compiled["fast"](state, batch)
            first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < 0.5 * first
    assert int(state.step) == 25
