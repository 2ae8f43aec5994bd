"""Study trials share one compiled step per structure (issue 21 part 3): a trial's continuous values are tensor
inputs of the step (``hwr.tasks.digits.training.tuned``), so ten trials of one structure compile once, a trial
trains to the same figures eagerly and compiled, and every component reads the same numbers from tensors as it
did from the config."""

import dataclasses

import optuna
import pytest
import torch
from tiny import EAGER, run_config
from torch._dynamo.testing import CompileCounter

from hwr import losses, optim, random, tree
from hwr.config import DataSettings
from hwr.data import augment as aug
from hwr.data import mix as mixing
from hwr.data.augment import AugmentConfig
from hwr.data.mix import MixConfig
from hwr.engine import execution as ex
from hwr.engine import train
from hwr.engine.execution import Execution
from hwr.losses import LossConfig
from hwr.optim import OptimConfig
from hwr.runs import CHECKPOINT
from hwr.tasks import digits
from hwr.tasks.digits.config import ClassifierConfig, FinetuneConfig, RunConfig
from hwr.tune.spec import PRUNERS, pruner_epochs
from hwr.tune.study import train_fresh

COMPILED = Execution(device="cpu", candidate="inductor")  # one candidate: one compile per structure


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny CNN pretrained for one epoch on 128 optdigits images: what the trials fine-tune."""
    out = tmp_path_factory.mktemp("source") / "run"
    digits.run(run_config(dataset="optdigits", batch_size=32, limit_train=128, limit_test=20), out, execution=EAGER)
    return out


def trial(source, i: int, weighting: str = "logit_adjust") -> RunConfig:
    """Trial ``i`` of one structure: every continuous lever on, each value its own (learning rate, weight decay,
    tau or class-weight power, the long-tail draw's class counts, the DRW switch step through the epochs, mixing
    alphas and share, every augmentation magnitude, the backbone multiplier, L2-SP strength)."""
    f = 1.0 + i / 7
    return RunConfig(
        dataset=f"optdigits-lt:ratio={20 + 10 * i}",
        validation="heldout",
        batch_size=16,
        epochs=1 + i % 2,
        limit_train=96,
        optim=OptimConfig("adamw", 1e-3 * f, "cosine", weight_decay=1e-4 * f),
        loss=LossConfig(weighting, tau=f, power=0.25 + i / 20, defer=0.5),
        augment=AugmentConfig(
            rotation=5 * f,
            translate=f,
            scale=0.05 * f,
            shear=3 * f,
            elastic_alpha=2 * f,
            elastic_sigma=3 + i / 4,
            erase_prob=0.1 * f,
            erase_scale=(0.02 * f, 0.2),
            blur=0.5 * f,
        ),
        mix=MixConfig(mixup=0.2 * f + 0.5 * (i % 2), cutmix=0.3 * f, prob=0.3 * f),
        finetune=FinetuneConfig(str(source), "all", 0.1 * f, l2sp=1e-3 * f),
    )


def test_ten_trials_of_one_structure_compile_once(source, tmp_path, monkeypatch):
    counter = CompileCounter()  # counts dynamo's frames and runs the graphs as traced: no inductor build
    monkeypatch.setattr(
        train, "compile", lambda fn, **kw: torch.compile(fn, fullgraph=True, dynamic=False, backend=counter)
    )
    ex.release_shared()
    shared, results = [], []
    for i in range(10):
        results.append(train_fresh(trial(source, i), tmp_path / f"t{i}", COMPILED, DataSettings()))
        shared.append(results[-1]["execution"]["shared"])
        assert results[-1]["execution"]["candidate"] == "inductor"
    assert counter.frame_count == 1, f"10 trials of one structure compiled {counter.frame_count} times"
    assert shared == [False] + [True] * 9
    for i in (4, 9):  # the shared step trained with each trial's own values, not the first trial's
        eager = train_fresh(trial(source, i), tmp_path / f"e{i}", EAGER, DataSettings())
        got = [r[k] for r in results[i]["epochs"] for k in ("train_loss", "val_loss")]
        assert got == pytest.approx([r[k] for r in eager["epochs"] for k in ("train_loss", "val_loss")], rel=1e-5)
    for i in range(3):  # a second structure (class weights instead of logit adjustment): one compile more
        train_fresh(trial(source, i, "inverse"), tmp_path / f"w{i}", COMPILED, DataSettings())
    assert counter.frame_count == 2
    ex.release_shared()


def test_crt_steps_of_one_structure_compile_once(source, tmp_path, monkeypatch):
    counter = CompileCounter()
    monkeypatch.setattr(
        train, "compile", lambda fn, **kw: torch.compile(fn, fullgraph=True, dynamic=False, backend=counter)
    )
    ex.release_shared()
    for i in range(3):  # cRT's learning rate, epochs and the augmentation it trains under change
        crt = ClassifierConfig(crt_epochs=1 + i, crt_lr=1e-3 * (1 + i))
        config = dataclasses.replace(trial(source, i), epochs=1, classifier=crt)
        result = train_fresh(config, tmp_path / f"t{i}", COMPILED, DataSettings())
        assert result["post_training"]["crt_epochs"] == 1 + i
    assert counter.frame_count == 2  # the trial's step and cRT's, each once
    ex.release_shared()


@pytest.mark.slow  # one inductor compile of the trial's step: about 40 s cold, 10 s from a warm inductor cache
def test_a_trial_trains_to_the_same_figures_eagerly_and_compiled(source, tmp_path):
    ex.release_shared()
    config = dataclasses.replace(trial(source, 3), epochs=2)
    eager = train_fresh(config, tmp_path / "eager", EAGER, DataSettings())
    # realize values read more than once instead of inlining them (the same numbers): key chains inlined into
    # every consumer made this cold build 85 s, 38 s this way (as in tests/test_random.py)
    with torch._inductor.config.patch(realize_reads_threshold=1):
        compiled = train_fresh(config, tmp_path / "compiled", COMPILED, DataSettings())
    assert compiled["execution"]["compile"] and not eager["execution"]["compile"]
    for a, b in zip(eager["epochs"], compiled["epochs"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    assert eager["val"]["macro_f1"] == pytest.approx(compiled["val"]["macro_f1"], abs=1e-9)
    params = [digits.load_run(tmp_path / name)[1] for name in ("eager", "compiled")]
    for name, p in tree.flatten_names(params[0]).items():
        q = tree.flatten_names(params[1])[name]
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), f"{name}: {float((p - q).abs().max()):.2e}"
    assert (tmp_path / "compiled" / CHECKPOINT).is_file()
    ex.release_shared()


# ------------------------------------------------------------------------- the components: tensors = numbers


def test_optimizer_from_tensors_equals_optimizer_from_numbers():
    cfg = OptimConfig("adamw", 2e-3, "onecycle", weight_decay=3e-4, clip_norm=1.0)
    params = {"w": torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), "b": torch.zeros(3)}
    mults = {"w": 0.1, "b": 1.0}
    anchor = tree.map(lambda p: p + 0.5, params)
    hp = optim.hyperparameters(cfg, 12)
    to_t = lambda m: torch.tensor(m, dtype=torch.float64)
    numbers = optim.from_config(cfg, 12, mults, extra=[optim.add_l2_toward(anchor, 0.01)])
    tensors = optim.from_config(cfg, 0, tree.map(to_t, mults), extra=[optim.add_l2_toward(anchor, to_t(0.01))], hp=hp)
    ps = [params, params]
    states = [numbers.init(params), tensors.init(params)]
    for t in range(12):
        g = tree.map(lambda p, t=t: torch.sin(p * (t + 1)), params)
        for k, opt in enumerate((numbers, tensors)):
            u, states[k] = opt.update(g, states[k], ps[k])
            ps[k] = optim.apply_updates(ps[k], u)
        for name in params:
            assert torch.equal(ps[0][name], ps[1][name]), f"step {t}: {name}"


@pytest.mark.parametrize("weighting", ["logit_adjust", "inverse", "effective", "none"])
def test_loss_from_tensors_equals_loss_from_numbers(weighting):
    cfg = LossConfig(
        weighting, power=0.7, beta=0.99, tau=1.3, label_smoothing=0.1, defer=0.5 if weighting != "none" else 0
    )
    counts = [50, 20, 5]
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g)
    numbers = losses.make_loss(cfg, counts, total_steps=10)
    tensors = losses.make_loss(cfg, hp=losses.hyperparameters(cfg, counts, total_steps=10))
    for step in (torch.tensor(0), torch.tensor(5)):
        args = (logits, labels, None, step) if cfg.defer else (logits, labels, None)
        assert torch.equal(numbers(*args), tensors(*args))


def test_augmentation_and_mixing_from_tensors_equal_them_from_numbers():
    cfg = AugmentConfig(
        rotation=12.0, translate=2.0, scale=0.1, shear=5.0, elastic_alpha=8.0, elastic_sigma=4.5, erase_prob=0.5
    )
    x = random.uniform(random.key(0), (6, 1, 12, 12))
    hp = aug.hyperparameters(cfg, (12, 12))
    assert torch.equal(aug.augment(random.key(1), x, cfg), aug.augment(random.key(1), x, cfg, hp))
    for m in (MixConfig(mixup=0.4, cutmix=1.5, prob=0.7), MixConfig(mixup=2.0)):
        a = mixing.mix_images(random.key(2), x, m)
        b = mixing.mix_images(random.key(2), x, m, mixing.hyperparameters(m))
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_structure_ignores_values_and_sees_choices(source):
    p = digits.prepare(trial(source, 0), device="cpu")
    same = [digits.training.structure(trial(source, i), p) for i in range(3)]
    assert len(set(same)) == 1
    other = dataclasses.replace(trial(source, 0), mix=MixConfig())
    assert digits.training.structure(other, p) != same[0]
    other = dataclasses.replace(trial(source, 0), finetune=FinetuneConfig(str(source), "all", 0.1))
    assert digits.training.structure(other, p) != same[0]


def test_validation_is_cut_into_even_batches_not_padded_ones(monkeypatch):
    """A trial validates 200 images each epoch: one batch of 200, not a batch of 1,000 that is 80% padding; 1,500
    images are two batches of 750. The figures are those of any batching."""
    sizes = []
    real = digits.training.bt.batches
    monkeypatch.setattr(digits.training.bt, "batches", lambda *a, **kw: sizes.append(a[3]) or real(*a, **kw))
    p = digits.prepare(run_config(dataset="optdigits", limit_train=64, limit_test=20), device="cpu")
    for n, want in ((200, 200), (1500, 750), (1000, 1000), (7, 7)):
        x, y = p.train[0][:1].expand(n, -1, -1, -1), torch.arange(n) % 10
        got = digits.evaluate(p.model, p.params, p.model_state, x, y, 10, mean=p.mean, std=p.std)
        assert sizes[-1] == want and got["count"] == n
    small = digits.evaluate(p.model, p.params, p.model_state, x, y, 10, mean=p.mean, std=p.std, batch_size=3)
    assert small["confusion"] == got["confusion"]


def test_a_trial_validates_at_the_epochs_its_pruner_reads(tmp_path):
    halving = pruner_epochs(PRUNERS["halving"]())  # rungs at steps 2, 6, 18: epochs 3, 7, 19
    assert [e for e in range(1, 60) if halving(e)] == [3, 7, 19, 55]
    hyperband = pruner_epochs(PRUNERS["hyperband"]())
    assert [e for e in range(1, 60) if hyperband(e)] == [3, 7, 19, 55]
    assert all(pruner_epochs(PRUNERS["median"]())(e) for e in range(1, 30))
    assert not any(pruner_epochs(None)(e) for e in range(1, 30))
    assert all(pruner_epochs(optuna.pruners.SuccessiveHalvingPruner())(e) for e in range(1, 9))  # "auto" rungs
    result = digits.run(run_config(epochs=4), tmp_path / "run", execution=EAGER, validate_every=lambda e: e == 2)
    assert ["val_macro_f1" in r for r in result["epochs"]] == [False, True, False, True]  # and the last
