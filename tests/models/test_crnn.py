"""hwr.models.crnn: parity with the torch modules it mirrors, the meta device, one compiled graph, transfer of
a digit CNN's stem, input checks."""

import pytest
import torch
from torch import nn as tnn
from torch._dynamo.utils import counters

from hwr import models, random, runs, tree
from hwr.models import crnn
from hwr.models.cnn import CNNConfig
from hwr.models.crnn import CRNNConfig

ATOL = 1e-5
SMALL = dict(channels=(4, 8), height=16, hidden=6, num_classes=5)


def _perturb(p: dict, k) -> dict:
    """Non-trivial values everywhere (unit norms and zero biases would hide a wiring mistake)."""
    flat = tree.flatten_names(p)
    keys = random.split(k, len(flat))
    return tree.unflatten_names({n: v + 0.1 * random.normal(kk, v.shape) for (n, v), kk in zip(flat.items(), keys)})


class _Ref(tnn.Module):
    """The same network from torch modules: Conv2d / BatchNorm2d / MaxPool2d(ceil_mode) blocks, columns,
    Linear projection, nn.GRU / nn.LSTM / nn.TransformerEncoderLayer(norm_first) stack, Linear head."""

    def __init__(self, c: CRNNConfig):
        super().__init__()
        self.c = c
        layers, in_ch = [], c.in_channels
        for b, out_ch in enumerate(c.channels, start=1):
            for j in range(c.convs_per_block):
                layers.append(
                    tnn.Conv2d(in_ch, out_ch, c.kernel_size, padding=c.kernel_size // 2, bias=c.norm == "none")
                )
                if c.norm == "batch":
                    layers.append(tnn.BatchNorm2d(out_ch))
                if j < c.convs_per_block - 1:
                    layers.append(tnn.ReLU())
                in_ch = out_ch
            layers += [tnn.MaxPool2d((2, 2) if b <= c.width_pools else (2, 1), ceil_mode=True), tnn.ReLU()]
        self.stem = tnn.Sequential(*layers)
        width = c.features
        self.proj = None
        if c.encoder == "transformer" or c.proj:
            self.proj = tnn.Linear(width, c.hidden if c.encoder == "transformer" else c.proj)
            width = self.proj.out_features
        if c.encoder == "transformer":
            self.enc = tnn.ModuleList(
                tnn.TransformerEncoderLayer(
                    c.hidden, c.heads, c.mlp_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
                )
                for _ in range(c.num_layers)
            )
            self.norm = tnn.LayerNorm(c.hidden)
        else:
            cls = tnn.GRU if c.encoder == "gru" else tnn.LSTM
            self.enc = cls(width, c.hidden, num_layers=c.num_layers, bidirectional=c.bidirectional, batch_first=True)
        self.head = tnn.Linear(c.encoder_width, c.num_classes + 1)

    def forward(self, x):
        x = self.stem(x)
        seq = x.permute(0, 3, 1, 2).flatten(2)
        if self.proj is not None:
            seq = self.proj(seq)
        if self.c.encoder == "transformer":
            seq = seq + crnn.sinusoids(seq.shape[1], self.c.hidden, device=seq.device)
            for layer in self.enc:
                seq = layer(seq)
            seq = self.norm(seq)
        else:
            seq = self.enc(seq)[0]
        return self.head(seq)

    def load(self, p: dict) -> None:
        """Copy our parameters in (PyTorch layouts, so plain copies)."""
        c = self.c
        with torch.no_grad():
            mods = iter(self.stem)
            for b in range(1, len(c.channels) + 1):
                for j in range(1, c.convs_per_block + 1):
                    conv = next(m for m in mods if isinstance(m, tnn.Conv2d))
                    conv.weight.copy_(p[f"block{b}"][f"conv{j}"]["kernel"])
                    if conv.bias is not None:
                        conv.bias.copy_(p[f"block{b}"][f"conv{j}"]["bias"])
                    if c.norm == "batch":
                        bn = next(mods)
                        bn.weight.copy_(p[f"block{b}"][f"norm{j}"]["scale"])
                        bn.bias.copy_(p[f"block{b}"][f"norm{j}"]["bias"])
            if self.proj is not None:
                self.proj.weight.copy_(p["proj"]["kernel"])
                self.proj.bias.copy_(p["proj"]["bias"])
            if c.encoder == "transformer":
                for n, ref in enumerate(self.enc, start=1):
                    q = p[f"layer{n}"]
                    ref.self_attn.in_proj_weight.copy_(q["attn"]["qkv"]["kernel"])
                    ref.self_attn.in_proj_bias.copy_(q["attn"]["qkv"]["bias"])
                    ref.self_attn.out_proj.weight.copy_(q["attn"]["out"]["kernel"])
                    ref.self_attn.out_proj.bias.copy_(q["attn"]["out"]["bias"])
                    for ours, theirs in (("fc1", ref.linear1), ("fc2", ref.linear2)):
                        theirs.weight.copy_(q["mlp"][ours]["kernel"])
                        theirs.bias.copy_(q["mlp"][ours]["bias"])
                    for ours, theirs in (("norm1", ref.norm1), ("norm2", ref.norm2)):
                        theirs.weight.copy_(q[ours]["scale"])
                        theirs.bias.copy_(q[ours]["bias"])
                self.norm.weight.copy_(p["norm"]["scale"])
                self.norm.bias.copy_(p["norm"]["bias"])
            else:
                for i in range(c.num_layers):
                    for d, suffix in (("fwd", ""), ("bwd", "_reverse"))[: 2 if c.bidirectional else 1]:
                        q = p[f"layer{i + 1}"][d]
                        for part in ("ih", "hh"):
                            getattr(self.enc, f"weight_{part}_l{i}{suffix}").copy_(q[part]["kernel"])
                            getattr(self.enc, f"bias_{part}_l{i}{suffix}").copy_(q[part]["bias"])
            self.head.weight.copy_(p["head"]["kernel"])
            self.head.bias.copy_(p["head"]["bias"])


@pytest.mark.parametrize(
    "extra",
    [
        dict(),  # BiGRU, batch norm, no projection
        dict(encoder="lstm", norm="none", proj=7, num_layers=2, convs_per_block=2),
        dict(encoder="gru", bidirectional=False, width_pools=1),
        dict(encoder="transformer", hidden=8, heads=2, mlp_dim=12, num_layers=2),
    ],
    ids=["bigru-bn", "bilstm-2layers", "gru-stride2", "transformer"],
)
def test_matches_torch_modules(extra):
    cfg = CRNNConfig(**{**SMALL, **extra})
    m = models.get("crnn", cfg)
    params = _perturb(m.init(random.key(0)), random.key(1))
    ref = _Ref(cfg)
    ref.load(params)
    x = random.uniform(random.key(2), (3, 1, 16, 22))  # a width that is no multiple of the stride
    state = m.init_state()
    ref.train()
    out, new_state = m.apply(params, state, x, train=True)
    want = ref(x)
    assert out.shape == (3, cfg.frames(22), cfg.num_classes + 1)
    torch.testing.assert_close(out, want.detach(), atol=ATOL, rtol=0)
    # gradients through everything, against autograd on the module
    w = random.normal(random.key(3), out.shape)
    (want * w).sum().backward()
    grads = torch.func.grad(lambda p: (m.apply(p, state, x, train=True)[0] * w).sum())(params)
    torch.testing.assert_close(grads["head"]["kernel"], ref.head.weight.grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(grads["block1"]["conv1"]["kernel"], ref.stem[0].weight.grad, atol=1e-4, rtol=0)
    if cfg.norm == "batch":  # running statistics as nn.BatchNorm2d updates them
        bn = ref.stem[1]
        torch.testing.assert_close(new_state["block1"]["norm1"]["mean"], bn.running_mean, atol=ATOL, rtol=0)
        torch.testing.assert_close(new_state["block1"]["norm1"]["var"], bn.running_var, atol=ATOL, rtol=0)
        ref.eval()
        with torch.no_grad():
            torch.testing.assert_close(m.apply(params, new_state, x)[0], ref(x), atol=ATOL, rtol=0)


def test_meta_device_gives_only_meta_tensors():
    m = models.get("crnn", CRNNConfig(**SMALL))
    params = m.init(random.key(0, device="meta"))
    state = tree.map(lambda t: t.to("meta"), m.init_state())
    assert all(t.device.type == "meta" for t in tree.leaves(params))
    out, new_state = m.apply(params, state, torch.empty(2, 1, 16, 24, device="meta"), train=True)
    assert out.device.type == "meta" and out.shape == (2, 6, 6)
    assert all(t.device.type == "meta" for t in tree.leaves(new_state))
    t = models.get("crnn", CRNNConfig(**{**SMALL, "encoder": "transformer", "hidden": 8, "heads": 2}))
    t_state = tree.map(lambda v: v.to("meta"), t.init_state())
    out, _ = t.apply(t.init(random.key(0, device="meta")), t_state, torch.empty(2, 1, 16, 24, device="meta"))
    assert out.device.type == "meta"


def test_compiles_to_one_graph():
    """Loss and gradients trace into one graph (AOT autograd's, no code generation: a cold inductor build of a GRU
    costs the CI a minute) equal to eager; inductor's numerics of the CRNN, forward and backward, are
    tests/tasks/strings/test_training.py's (the compiled strings step equals eager)."""
    m = models.get("crnn", CRNNConfig(**SMALL))
    params = m.init(random.key(0))
    state = m.init_state()
    x = random.uniform(random.key(1), (4, 1, 16, 16))

    def loss_and_grad(p, s, x):
        return torch.func.grad_and_value(lambda q: m.apply(q, s, x, train=True)[0].square().mean())(p)

    counters.clear()
    g, v = torch.compile(loss_and_grad, fullgraph=True, dynamic=False, backend="aot_eager")(params, state, x)
    g_ref, v_ref = loss_and_grad(params, state, x)
    torch.testing.assert_close(v, v_ref, atol=ATOL, rtol=1e-5)
    for name, leaf in tree.flatten_names(g).items():
        torch.testing.assert_close(leaf, tree.flatten_names(g_ref)[name], atol=ATOL, rtol=1e-4, msg=name)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


@pytest.mark.parametrize(
    ("cnn", "extra", "expected"),
    [
        (
            CNNConfig(),
            dict(norm="none"),
            {"block1.conv1.kernel", "block1.conv1.bias", "block2.conv1.kernel", "block2.conv1.bias"},
        ),
        (
            CNNConfig(channels=(32, 64), convs_per_block=2, norm="batch", hidden=256),
            dict(convs_per_block=2),
            {
                f"block{b}.{k}{j}.{leaf}"
                for b in (1, 2)
                for j in (1, 2)
                for k, leaf in (("conv", "kernel"), ("norm", "scale"), ("norm", "bias"))
            },
        ),
    ],
    ids=["seed-cnn", "best-cnn"],
)
def test_digit_cnn_stem_transfers_by_name_and_shape(cnn, extra, expected):
    digit = models.get("cnn", cnn).init(random.key(0))
    strings = models.get("crnn", CRNNConfig(**extra)).init(random.key(1))
    params, fresh = runs.transfer(tree.flatten_names(digit), strings, strict=False)
    kept = set(tree.flatten_names(params)) - set(fresh)
    assert kept == expected
    assert torch.equal(params["block2"]["conv1"]["kernel"], digit["block2"]["conv1"]["kernel"])


def test_input_and_config_errors():
    m = models.get("crnn", CRNNConfig(**SMALL))
    p = m.init(random.key(0))
    with pytest.raises(ValueError, match=r"\(B, 1, 16, W\)"):
        m.apply(p, m.init_state(), torch.zeros(2, 1, 28, 28))
    with pytest.raises(TypeError, match="float"):
        m.apply(p, m.init_state(), torch.zeros(2, 1, 16, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="key"):
        d = models.get("crnn", CRNNConfig(**SMALL, dropout=0.2))
        d.apply(d.init(random.key(0)), d.init_state(), torch.zeros(2, 1, 16, 32), train=True)
    with pytest.raises(ValueError, match="encoder"):
        CRNNConfig(encoder="cnn")
    with pytest.raises(ValueError, match="blocks"):
        CRNNConfig(channels=(4, 4, 4, 4, 4, 4), height=32)
    assert CRNNConfig().blank == 10 and CRNNConfig().frames(161) == 41
