import math

import pytest
import torch

from hwr import models, nn, random, tree
from hwr.models import rnn
from hwr.models.rnn import RNNConfig
from hwr.tasks.digits import finetune

ATOL = 1e-5


def _copy_into(ref: torch.nn.RNNBase, params: dict, config: RNNConfig) -> None:
    """Copy our layer parameters into a torch RNN module (same packed gate layout)."""
    with torch.no_grad():
        for i in range(config.num_layers):
            for d, suffix in (("fwd", ""), ("bwd", "_reverse"))[: config.directions]:
                p = params[f"layer{i + 1}"][d]
                getattr(ref, f"weight_ih_l{i}{suffix}").copy_(p["ih"]["kernel"])
                getattr(ref, f"bias_ih_l{i}{suffix}").copy_(p["ih"]["bias"])
                getattr(ref, f"weight_hh_l{i}{suffix}").copy_(p["hh"]["kernel"])
                getattr(ref, f"bias_hh_l{i}{suffix}").copy_(p["hh"]["bias"])


def _ref_grads(ref: torch.nn.RNNBase, config: RNNConfig) -> dict:
    """The torch module's gradients arranged as our params pytree (without the head)."""
    out = {}
    for i in range(config.num_layers):
        layer = {}
        for d, suffix in (("fwd", ""), ("bwd", "_reverse"))[: config.directions]:
            layer[d] = {
                part: {
                    "kernel": getattr(ref, f"weight_{part}_l{i}{suffix}").grad,
                    "bias": getattr(ref, f"bias_{part}_l{i}{suffix}").grad,
                }
                for part in ("ih", "hh")
            }
        out[f"layer{i + 1}"] = layer
    return out


def _assert_close_trees(a, b, atol: float = ATOL) -> None:
    fa, fb = tree.flatten_names(a), tree.flatten_names(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        torch.testing.assert_close(fa[name], fb[name], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_encode_matches_torch_rnn_outputs_and_gradients(cell, bidirectional):
    cfg = RNNConfig(cell=cell, hidden=6, num_layers=2, bidirectional=bidirectional, image_size=8)
    params = rnn.model(cfg).init(random.key(0))
    ref_cls = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    ref = ref_cls(cfg.features, cfg.hidden, num_layers=2, bidirectional=bidirectional, batch_first=True)
    _copy_into(ref, params, cfg)
    seq = random.normal(random.key(1), (5, cfg.steps, cfg.features))  # (B, T, F)
    w_out = random.normal(random.key(2), (5, cfg.steps, cfg.directions * cfg.hidden))
    w_last = random.normal(random.key(3), (5, cfg.directions * cfg.hidden))

    ref_out, ref_state = ref(seq)
    h_n = ref_state if cell == "gru" else ref_state[0]  # (layers*dirs, B, H)
    ref_last = torch.cat(list(h_n[-cfg.directions :]), dim=-1)
    ys, last = rnn.encode(params, seq, cfg)
    torch.testing.assert_close(ys, ref_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(last, ref_last, atol=ATOL, rtol=0)

    ((ref_out * w_out).sum() + (ref_last * w_last).sum()).backward()

    def objective(p):
        ys, last = rnn.encode(p, seq, cfg)
        return (ys * w_out).sum() + (last * w_last).sum()

    layers = {k: v for k, v in params.items() if k != "head"}
    _assert_close_trees(torch.func.grad(objective)(layers), _ref_grads(ref, cfg))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cells_match_torch_with_initial_state(cell):
    p = (nn.init_gru if cell == "gru" else nn.init_lstm)(random.key(0), 4, 5)
    ref = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(4, 5, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(p["ih"]["kernel"])
        ref.bias_ih_l0.copy_(p["ih"]["bias"])
        ref.weight_hh_l0.copy_(p["hh"]["kernel"])
        ref.bias_hh_l0.copy_(p["hh"]["bias"])
    x = random.normal(random.key(1), (3, 7, 4))
    h0 = random.normal(random.key(2), (3, 5))
    if cell == "gru":
        ys, h = nn.gru(p, x, h0)
        ref_ys, ref_h = ref(x, h0[None])
        torch.testing.assert_close(h, ref_h[0], atol=ATOL, rtol=0)
    else:
        c0 = random.normal(random.key(3), (3, 5))
        ys, (h, c) = nn.lstm(p, x, (h0, c0))
        ref_ys, (ref_h, ref_c) = ref(x, (h0[None], c0[None]))
        torch.testing.assert_close(h, ref_h[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(c, ref_c[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(ys, ref_ys, atol=ATOL, rtol=0)


def test_reverse_direction_reads_the_sequence_backwards():
    p = nn.init_gru(random.key(0), 3, 4)
    x = random.normal(random.key(1), (2, 6, 3))
    ys_rev, h_rev = nn.gru(p, x, reverse=True)
    ys_fwd, h_fwd = nn.gru(p, x.flip(1))
    torch.testing.assert_close(ys_rev, ys_fwd.flip(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(h_rev, h_fwd, atol=1e-6, rtol=0)


def _backward_ops(out: torch.Tensor) -> list[str]:
    """The autograd nodes ``out``'s backward runs, by name."""
    seen, stack, names = set(), [out.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_steps_are_split_once_so_the_backward_is_linear_in_time(cell):
    """The input projection is split into its steps by one unbind (backward: one stack), not indexed per step,
    whose backward makes a zero-filled (B, T, gates*H) gradient for every step and adds them: quadratic in T,
    a tenth of an eager strings step before the change."""
    p = (nn.init_gru if cell == "gru" else nn.init_lstm)(random.key(0), 3, 4)
    x = random.normal(random.key(1), (2, 12, 3)).requires_grad_()
    for reverse in (False, True):
        ys = (nn.gru if cell == "gru" else nn.lstm)(p, x, reverse=reverse)[0]
        ops = _backward_ops(ys)
        assert ops.count("UnbindBackward0") == 1 and "SelectBackward0" not in ops, sorted(set(ops))


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_model_logits_match_torch_rnn_with_head(readout):
    cfg = RNNConfig(cell="lstm", hidden=6, num_layers=2, bidirectional=True, readout=readout, image_size=8)
    m = rnn.model(cfg)
    params = m.init(random.key(0))
    ref = torch.nn.LSTM(cfg.features, 6, num_layers=2, bidirectional=True, batch_first=True)
    _copy_into(ref, params, cfg)
    x = random.uniform(random.key(1), (4, 1, 8, 8))
    out, (h_n, _c) = ref(x[:, 0])  # rows are the steps
    feats = torch.cat([h_n[-2], h_n[-1]], -1) if readout == "last" else out.mean(1)
    expected = torch.nn.functional.linear(feats, params["head"]["kernel"], params["head"]["bias"])
    logits, state = m.apply(params, m.init_state(), x)
    assert state == {}
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_conv_reader_reads_stem_columns():
    cfg = RNNConfig(reader="conv", stem_channels=3, hidden=5, image_size=10)
    params = rnn.model(cfg).init(random.key(0))
    x = random.uniform(random.key(1), (2, 1, 10, 10))
    seq = rnn.sequence(params, x, cfg)
    assert seq.shape == (2, cfg.steps, cfg.features) == (2, 5, 15)
    stem = torch.nn.functional.max_pool2d(torch.relu(nn.conv2d(params["stem"]["conv1"], x)), 2)  # (2, 3, 5, 5)
    torch.testing.assert_close(seq[:, 2], stem[:, :, :, 2].flatten(1))  # step 2 = column 2, channels then rows
    assert list(params) == ["stem", "layer1", "head"]


def test_default_parameter_shapes():  # the default model's name, config and logits: test_models.py
    params = models.get("rnn").init(random.key(0))
    assert params["layer1"]["fwd"]["ih"]["kernel"].shape == (3 * 128, 28)
    assert params["head"]["kernel"].shape == (10, 128)
    cfg = models.config_from_dict("rnn", {"cell": "lstm", "bidirectional": True, "num_classes": 5})
    p = models.get("rnn", cfg).init(random.key(0))
    assert p["layer1"]["bwd"]["hh"]["kernel"].shape == (4 * 128, 128)
    assert p["head"]["kernel"].shape == (5, 256)


def test_init_is_pytorch_default_and_keyed():
    cfg = RNNConfig(cell="lstm", hidden=64, num_layers=2, bidirectional=True)
    a = rnn.model(cfg).init(random.key(0))
    b = rnn.model(cfg).init(random.key(0))
    c = rnn.model(cfg).init(random.key(1))
    _assert_close_trees(a, b, atol=0)
    assert not torch.equal(a["layer2"]["bwd"]["hh"]["kernel"], c["layer2"]["bwd"]["hh"]["kernel"])
    assert not torch.equal(a["layer1"]["fwd"]["ih"]["kernel"], a["layer1"]["bwd"]["ih"]["kernel"])
    w = a["layer2"]["fwd"]["hh"]["kernel"]  # uniform in +-1/sqrt(hidden), as nn.LSTM
    bound = 1 / math.sqrt(64)
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.01


def test_fine_tuning_last_block_is_the_top_layer():
    params = rnn.model(RNNConfig(reader="conv", num_layers=3, hidden=8)).init(random.key(0))
    groups = finetune.top_level_groups(params)
    assert groups == {"head": ["head"], "last": ["layer3"], "early": ["stem", "layer1", "layer2"]}


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("cell", "rnn", "cell"),
        ("reader", "cols", "reader"),
        ("readout", "max", "readout"),
        ("hidden", 0, "hidden"),
        ("num_layers", 0, "num_layers"),
        ("dropout", 1.0, "dropout"),
        ("stem_channels", 0, "stem_channels"),
    ],
)
def test_bad_config_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        RNNConfig(**{field: value})


def test_bad_config_conv_reader_needs_two_pixels_and_unknown_fields():
    with pytest.raises(ValueError, match="image_size"):
        RNNConfig(reader="conv", image_size=1)
    with pytest.raises(ValueError, match="unknown rnn config"):
        models.config_from_dict("rnn", {"hiden": 3})
