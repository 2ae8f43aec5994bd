"""hwr.optim: parity with torch.optim over many steps, schedules vs closed forms, transforms, purity, compile."""

import math

import pytest
import torch

from hwr import optim, tree

STEPS = 20


def _params() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "conv": {"kernel": torch.randn(4, 2, 3, 3, generator=g), "bias": torch.randn(4, generator=g)},
        "head": {"kernel": torch.randn(3, 5, generator=g) * 0.1},
    }


def _grads(n: int = STEPS) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):  # varying scale and sign, some tiny entries
        scale = 1.0 + 0.5 * math.sin(i)
        out.append(tree.map(lambda p, s=scale: torch.randn(p.shape, generator=g) * s, _params()))
    return out


def _run_ours(opt: optim.GradientTransformation, grads: list[dict]) -> list[dict]:
    params = _params()
    state = opt.init(params)
    history = []
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
        history.append(params)
    return history


def _run_torch(make, grads: list[dict], scheduler=None) -> list[dict]:
    params = tree.map(lambda p: p.clone().requires_grad_(), _params())
    leaves = tree.leaves(params)
    opt = make(leaves)
    sched = scheduler(opt) if scheduler else None
    history = []
    for g in grads:
        for p, gl in zip(leaves, tree.leaves(g)):
            p.grad = gl.clone()
        opt.step()
        if sched:
            sched.step()
        history.append(tree.map(lambda p: p.detach().clone(), params))
    return history


def _assert_histories_close(ours, ref, rtol=1e-6, atol=1e-6):
    """Parameters are O(1): ``atol`` allows the few float32 ulps by which torch's fused ``param.add_(buf,
    alpha=-lr)`` (one rounding) and our ``p + (-lr * buf)`` (two roundings) drift apart over 20 steps."""
    assert len(ours) == len(ref)
    for step, (a, b) in enumerate(zip(ours, ref)):
        for name, leaf in tree.flatten_names(a).items():
            expected = tree.flatten_names(b)[name]
            assert leaf.dtype == expected.dtype
            assert torch.allclose(leaf, expected, rtol=rtol, atol=atol), (
                f"step {step + 1}, {name}: max diff {float((leaf - expected).abs().max()):.3g}"
            )


CASES = {
    "adam": (lambda: optim.adam(1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)),
    "adam_betas": (
        lambda: optim.adam(3e-3, b1=0.8, b2=0.99, eps=1e-6),
        lambda ps: torch.optim.Adam(ps, lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
    ),
    "adamw": (lambda: optim.adamw(1e-2, weight_decay=0.1), lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1)),
    "sgd": (lambda: optim.sgd(0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    "sgd_momentum": (lambda: optim.sgd(0.05, 0.9), lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "sgd_nesterov": (
        lambda: optim.sgd(0.05, 0.9, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    ),
    "sgd_weight_decay": (
        lambda: optim.sgd(0.05, weight_decay=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.05, weight_decay=1e-2),
    ),
    "sgd_all": (
        lambda: optim.sgd(0.05, 0.9, nesterov=True, weight_decay=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    ),
    "sgd_dampening": (
        lambda: optim.chain(optim.trace(0.9, dampening=0.3), optim.scale_by_learning_rate(0.05)),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.3),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_optim_over_many_steps(name):
    ours, theirs = CASES[name]
    grads = _grads()
    _assert_histories_close(_run_ours(ours(), grads), _run_torch(theirs, grads))


def test_parity_test_detects_a_wrong_hyperparameter():
    grads = _grads()
    with pytest.raises(AssertionError):
        _assert_histories_close(_run_ours(optim.adam(1e-2, b2=0.99), grads), _run_torch(CASES["adam"][1], grads))


def test_adam_with_cosine_schedule_matches_torch_scheduler():
    grads = _grads()
    ours = _run_ours(optim.adam(optim.cosine(1e-2, STEPS, final=1e-4)), grads)
    ref = _run_torch(
        lambda ps: torch.optim.Adam(ps, lr=1e-2),
        grads,
        scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS, eta_min=1e-4),
    )
    _assert_histories_close(ours, ref)


# ---------------------------------------------------------------------------------------------- schedules


def _eval(schedule, t: int) -> float:
    return float(schedule(torch.tensor(float(t), dtype=torch.float64)))


def test_constant_schedule():
    s = optim.constant(3e-4)
    assert all(_eval(s, t) == 3e-4 for t in (0, 1, 1000))
    assert s(torch.zeros((), dtype=torch.float64)).dtype == torch.float64


def test_cosine_closed_form_and_torch_scheduler():
    peak, steps, final = 0.1, 50, 1e-3
    s = optim.cosine(peak, steps, final=final)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=final)
    for t in range(steps + 1):
        closed = final + 0.5 * (peak - final) * (1 + math.cos(math.pi * t / steps))
        assert _eval(s, t) == pytest.approx(closed, rel=1e-12)
        assert _eval(s, t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()
    assert _eval(s, steps + 10) == pytest.approx(final, rel=1e-12)  # held after the end


def test_onecycle_closed_form():
    peak, steps = 3e-3, 100
    s = optim.onecycle(peak, steps, warmup=0.3)
    n_up, lo, end = 30, peak / 25, peak / 1e4
    for t in range(steps + 5):
        if t < n_up:
            closed = lo + (peak - lo) * t / n_up
        else:
            frac = min((t - n_up) / (steps - n_up), 1.0)
            closed = end + 0.5 * (peak - end) * (1 + math.cos(math.pi * frac))
        assert _eval(s, t) == pytest.approx(closed, rel=1e-12), t
    assert _eval(s, 0) == pytest.approx(peak / 25)
    assert _eval(s, n_up) == pytest.approx(peak)
    assert _eval(s, steps) == pytest.approx(peak / 1e4)
    values = [_eval(s, t) for t in range(steps + 1)]
    assert max(values) == pytest.approx(peak) and values.index(max(values)) == n_up


def test_onecycle_without_warmup_starts_at_the_peak():
    s = optim.onecycle(1.0, 10, warmup=0.0)
    assert _eval(s, 0) == pytest.approx(1.0) and _eval(s, 1) < 1.0  # no step at peak/25 first
    assert _eval(s, 10) == pytest.approx(1e-4)
    tensor = optim.onecycle(torch.tensor(1.0, dtype=torch.float64), torch.tensor(10.0, dtype=torch.float64), warmup=0.0)
    assert [_eval(tensor, t) for t in range(11)] == pytest.approx([_eval(s, t) for t in range(11)], rel=1e-12)


@pytest.mark.parametrize("total", [9, 10, 11, 100])
def test_the_step_schedule_has_three_levels_whatever_the_length(total):
    """``OptimConfig(schedule="step")``: lr, lr/10, lr/100 over the run, never a fourth level in its last steps."""
    for steps in (total, torch.tensor(float(total), dtype=torch.float64)):
        hp = (
            None
            if isinstance(steps, int)
            else {**optim.hyperparameters(optim.OptimConfig("sgd", 1.0, "step", momentum=0.0), total)}
        )
        opt = optim.from_config(optim.OptimConfig("sgd", 1.0, "step", momentum=0.0), total, hp=hp)
        params, state, rates = {"w": torch.zeros(1)}, None, []
        state = opt.init(params)
        for _ in range(total):
            u, state = opt.update({"w": torch.ones(1)}, state, params)
            rates.append(round(-float(u["w"]), 6))
        assert sorted(set(rates), reverse=True) == [1.0, 0.1, 0.01], (total, sorted(set(rates)))


def test_a_clip_before_the_multipliers_leaves_frozen_leaves_out_of_the_norm():
    """Fine-tuning with ``clip_norm``: a frozen leaf (multiplier 0) has no gradient in torch
    (``requires_grad=False``), so the trained head's update does not shrink with the backbone's gradient."""
    cfg = optim.OptimConfig("sgd", 1.0, "constant", momentum=0.0, clip_norm=1.0)
    params = {"backbone": torch.zeros(2), "head": torch.zeros(2)}
    head = lambda g_backbone, mults: optim.from_config(cfg, 10, mults).update(
        {"backbone": torch.full((2,), g_backbone), "head": torch.tensor([0.3, 0.4])},
        optim.from_config(cfg, 10, mults).init(params),
        params,
    )[0]
    for mults in ({"backbone": 0.0, "head": 1.0}, {"backbone": torch.tensor(0.0), "head": torch.tensor(1.0)}):
        quiet, loud = head(0.0, mults), head(100.0, mults)
        assert torch.allclose(quiet["head"], loud["head"]) and torch.allclose(loud["head"], torch.tensor([-0.3, -0.4]))
        assert torch.equal(loud["backbone"], torch.zeros(2))
    slow = head(100.0, {"backbone": 0.1, "head": 1.0})  # a slowed, not frozen, backbone still counts (as in torch)
    assert float(slow["head"].abs().max()) < 0.01


def test_step_decay_closed_form_and_steplr():
    s = optim.step_decay(0.1, every=7, factor=0.5)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    for t in range(30):
        assert _eval(s, t) == pytest.approx(0.1 * 0.5 ** (t // 7), rel=1e-12)
        assert _eval(s, t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.cosine(0.1, 0),
        lambda: optim.onecycle(0.1, 0),
        lambda: optim.onecycle(0.1, 10, warmup=1.0),
        lambda: optim.step_decay(0.1, 0),
    ],
)
def test_schedule_errors(make):
    with pytest.raises(ValueError, match="needs"):
        make()


# ---------------------------------------------------------------------------------------------- transforms


def _torch_clip(grads: dict, max_norm: float) -> dict:
    clones = tree.map(lambda g: g.clone(), grads)
    ps = [torch.zeros_like(g, requires_grad=True) for g in tree.leaves(clones)]
    for p, g in zip(ps, tree.leaves(clones)):
        p.grad = g
    torch.nn.utils.clip_grad_norm_(ps, max_norm)
    return tree.unflatten_names(dict(zip(tree.flatten_names(clones), [p.grad for p in ps])))


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_by_global_norm_matches_clip_grad_norm(max_norm):
    g = _grads(1)[0]
    clip = optim.clip_by_global_norm(max_norm)
    out, _ = clip.update(g, clip.init(_params()), None)
    ref = _torch_clip(g, max_norm)
    for a, b in zip(tree.leaves(out), tree.leaves(ref)):
        assert torch.allclose(a, b, rtol=1e-6, atol=0)
    if max_norm < 1:
        assert float(tree.global_norm(out)) == pytest.approx(max_norm, rel=1e-5)


def test_chain_applies_transforms_in_order():
    grads = _grads()
    ours = _run_ours(optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1, 0.9)), grads)
    clipped = [_torch_clip(g, 1.0) for g in grads]
    ref = _run_torch(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), clipped)
    _assert_histories_close(ours, ref)
    # the other order is a different optimizer
    other = _run_ours(optim.chain(optim.sgd(0.1, 0.9), optim.clip_by_global_norm(1.0)), grads)
    with pytest.raises(AssertionError):
        _assert_histories_close(other, ref)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
    state = opt.init(_params())
    assert isinstance(state, tuple) and len(state) == 2


def test_scale_by_multipliers_freezes_and_slows_leaves():
    mult = {"conv": {"kernel": 0.0, "bias": 0.5}, "head": {"kernel": 1.0}}
    grads = _grads()
    ours = _run_ours(optim.chain(optim.adam(1e-2), optim.scale_by_multipliers(mult)), grads)
    plain = _run_ours(optim.adam(1e-2), grads)
    start = _params()
    assert torch.equal(ours[-1]["conv"]["kernel"], start["conv"]["kernel"])  # frozen
    assert torch.equal(ours[-1]["head"]["kernel"], plain[-1]["head"]["kernel"])  # untouched
    half = start["conv"]["bias"] + 0.5 * (plain[0]["conv"]["bias"] - start["conv"]["bias"])
    assert torch.allclose(ours[0]["conv"]["bias"], half, atol=1e-7)


def test_masked_applies_inner_to_selected_leaves_only():
    mask = {"conv": {"kernel": True, "bias": False}, "head": {"kernel": True}}
    grads = _grads(3)
    opt = optim.masked(optim.scale_by_adam(), mask)
    state = opt.init(_params())
    adam = optim.scale_by_adam()
    ref_state = adam.init(_params())
    for g in grads:
        out, state = opt.update(g, state, _params())
        ref, ref_state = adam.update(g, ref_state, _params())
        assert out["conv"]["bias"] is g["conv"]["bias"]  # passed through untouched
        assert torch.equal(out["conv"]["kernel"], ref["conv"]["kernel"])
        assert torch.equal(out["head"]["kernel"], ref["head"]["kernel"])
    assert len(tree.leaves(state.mu)) == 2  # the inner state covers the selected leaves only
    with pytest.raises(ValueError, match="does not match"):
        opt.update({"conv": grads[0]["conv"]}, state, None)


def test_adamw_mask_skips_decay_on_masked_out_leaves():
    mask = {"conv": {"kernel": True, "bias": False}, "head": {"kernel": True}}
    grads = _grads(3)
    ours = _run_ours(optim.adamw(1e-2, weight_decay=0.5, mask=mask), grads)
    no_decay = _run_ours(optim.adamw(1e-2, weight_decay=0.0), grads)
    decay = _run_ours(optim.adamw(1e-2, weight_decay=0.5), grads)
    assert torch.equal(ours[-1]["conv"]["bias"], no_decay[-1]["conv"]["bias"])
    assert torch.equal(ours[-1]["conv"]["kernel"], decay[-1]["conv"]["kernel"])


def test_add_decayed_weights_needs_params():
    t = optim.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="needs params"):
        t.update(_grads(1)[0], t.init(_params()), None)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd_all"])
def test_update_is_pure(name):
    opt = CASES[name][0]()
    params, grads = _params(), _grads(2)
    state = opt.init(params)
    _, state = opt.update(grads[0], state, params)  # a non-trivial state (count 1, moments set)
    snapshot = [tree.map(torch.clone, x) for x in (params, grads[1], state)]
    updates, new_state = opt.update(grads[1], state, params)
    new_params = optim.apply_updates(params, updates)
    for before, after in zip(snapshot, (params, grads[1], state)):
        for a, b in zip(tree.leaves(before), tree.leaves(after)):
            assert torch.equal(a, b), "update or apply_updates modified an input in place"
    assert not torch.equal(new_params["conv"]["kernel"], params["conv"]["kernel"])
    assert not all(torch.equal(a, b) for a, b in zip(tree.leaves(new_state), tree.leaves(state)))


def test_counters_are_int64_and_apply_updates_keeps_dtype():
    state = optim.adam(1e-3).init(_params())
    assert state[0].count.dtype == torch.int64 and state[1].count.dtype == torch.int64
    p = {"w": torch.zeros(3, dtype=torch.bfloat16)}
    out = optim.apply_updates(p, {"w": torch.full((3,), 0.5, dtype=torch.float32)})
    assert out["w"].dtype == torch.bfloat16 and bool((out["w"] == 0.5).all())


def test_adam_with_schedule_compiles_once_and_matches_eager():
    opt = optim.adam(optim.onecycle(1e-2, STEPS))

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    grads = _grads()
    params, state = _params(), opt.init(_params())
    eager_params, eager_state = _params(), opt.init(_params())
    params, state = compiled(params, state, grads[0])
    lrs = set()
    with torch.compiler.set_stance("fail_on_recompile"):
        for g in grads[1:]:
            lrs.add(float(optim.onecycle(1e-2, STEPS)(state[1].count)))
            params, state = compiled(params, state, g)
    for g in grads:
        eager_params, eager_state = step(eager_params, eager_state, g)
    assert len(lrs) == STEPS - 1  # the learning rate changed every step without a recompile
    assert float(state[1].count) == STEPS
    for a, b in zip(tree.leaves(params), tree.leaves(eager_params)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opt", [optim.adam(optim.onecycle(1e-2, STEPS)), optim.sgd(0.1, momentum=0.9)])
def test_a_compiled_update_is_traced_once(opt):
    """Counters are int64: float64 0-d inputs (hwr's counters before 2026-12-07) made dynamo restart its analysis
    and trace every compiled step twice on a cold cache (pytorch/pytorch#140346), a tenth of a cold compile."""

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    torch._dynamo.reset()
    attempts = torch._dynamo.utils.compilation_time_metrics
    attempts.clear()
    params = _params()
    torch.compile(step, backend="aot_eager", fullgraph=True, dynamic=False)(params, opt.init(params), _grads()[0])
    assert "compile_attempt_0" in attempts and "compile_attempt_1" not in attempts


def test_l2_toward_anchor_is_the_gradient_of_the_l2sp_penalty():
    from hwr import optim

    p = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([3.0])}
    anchor = {"a": torch.tensor([0.5, 0.0]), "b": torch.tensor([10.0])}
    g = {"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([0.3])}
    t = optim.add_l2_toward(anchor, 0.5)
    out, _ = t.update(g, t.init(p), p)
    # autograd of 0.5 / 2 * ||p - anchor||^2 + <g, p>
    leaves = {k: v.clone().requires_grad_() for k, v in p.items()}
    total = sum(0.25 * ((leaves[k] - anchor[k]) ** 2).sum() + (g[k] * leaves[k]).sum() for k in p)
    total.backward()
    for k in p:
        assert torch.allclose(out[k], leaves[k].grad)
    masked, _ = optim.add_l2_toward(anchor, 0.5, {"a": True, "b": False}).update(g, (), p)
    assert torch.equal(masked["b"], g["b"]) and torch.allclose(masked["a"], out["a"])
    assert torch.equal(p["a"], torch.tensor([1.0, -2.0]))  # pure
    with pytest.raises(ValueError, match="params"):
        t.update(g, (), None)
