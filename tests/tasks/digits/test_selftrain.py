"""Self-training (hwr.tasks.digits.selftrain): optdigits-lt's unlabelled pool is the images its draw leaves out,
with no labels; a teacher's pseudo-labels are exactly its confident readings; a self-trained run trains its
teacher in OUT/teacher first, adds what the teacher read confidently to its training split, records it, resumes,
and is refused before any teacher trains where the data has no unlabelled images."""

import dataclasses
import json
import shutil

import pytest
import torch
from sklearn.datasets import load_digits
from tiny import EAGER, self_training_config

from hwr import runs, tree
from hwr.config import DataSettings, from_dict, to_dict
from hwr.data import augment as aug
from hwr.data import optdigits as opt
from hwr.data import sources
from hwr.engine import train
from hwr.errors import InputError
from hwr.runs import RunError
from hwr.tasks import digits
from hwr.tasks.digits import selftrain
from hwr.tasks.digits.config import RunConfig, SelfTrainConfig

_config = self_training_config


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return DataSettings(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, root):
    """A self-trained tiny run (threshold 0.5) on optdigits-lt: its folder and metrics."""
    out = tmp_path_factory.mktemp("runs") / "run"
    return out, digits.run(_config(), out, execution=EAGER, data=root, write_figures=False)


def test_optdigits_lt_holds_the_pool_its_draw_leaves_out_without_labels(root):
    ds = sources.load("optdigits-lt", root)
    images = opt._all(root.root)[0]
    target = torch.from_numpy(load_digits().target).long()
    pool, _ = opt.optdigits_split(target)
    rest, _ = opt.optdigits_val_split(target[pool])
    rows = lambda x: sorted(bytes(t.flatten().tolist()) for t in x)
    assert len(ds.unlabeled_images) == 1797 - 206 - 400 - 530 == 661
    # the training pool is exactly the draw's labelled images plus the unlabelled ones: nothing from val or test
    assert rows(images[pool[rest]]) == sorted(rows(ds.train_images) + rows(ds.unlabeled_images))
    again, other = sources.load("optdigits-lt", root), sources.load("optdigits-lt:draw=1", root)
    assert torch.equal(again.unlabeled_images, ds.unlabeled_images)  # a fixed key: the same pool every load
    assert not torch.equal(other.unlabeled_images, ds.unlabeled_images) and len(other.unlabeled_images) == 661
    assert sources.load("optdigits", root).unlabeled_images is None  # balanced: every training image labelled


def test_pseudo_labels_are_the_teachers_confident_readings_and_change_nothing(trained, root):
    out, _ = trained
    teacher = out / selftrain.TEACHER
    x = sources.load("optdigits-lt", root).unlabeled_images
    before = x.clone()
    model, params, state, meta = runs.load_run(teacher)
    p = train.predict(model, params, state, x, transform=aug.make_transform(None, meta["mean"], meta["std"]))
    confidence, read = p.softmax(-1).max(-1)
    for threshold in (0.3, 0.5, 0.9):
        got = selftrain.pseudo_labels(teacher, x, tuple(meta["classes"]), threshold)
        keep = confidence >= threshold
        assert torch.equal(got.images, x[keep]) and torch.equal(got.labels, read[keep])
        assert got.record["kept"] == int(keep.sum()) and got.record["unlabeled"] == 661
        assert got.record["kept_per_class"] == torch.bincount(read[keep], minlength=10).tolist()
    assert torch.equal(x, before)  # pure
    assert selftrain.pseudo_labels(teacher, x[:0], tuple(meta["classes"]), 0.5).record["kept"] == 0
    with pytest.raises(RunError, match="reads classes"):
        selftrain.pseudo_labels(teacher, x, ("a", "b"), 0.5)


def test_a_self_trained_run_trains_its_teacher_first_and_adds_its_readings(trained, root):
    out, m = trained
    teacher = json.loads((out / selftrain.TEACHER / "config.json").read_text())
    assert teacher == to_dict(dataclasses.replace(_config(), self_train=SelfTrainConfig()))  # the same recipe, off
    assert json.loads((out / selftrain.TEACHER / "metrics.json").read_text())["test"] is None  # never scored
    record = m["self_training"]
    x = sources.load("optdigits-lt", root).unlabeled_images
    expected = selftrain.pseudo_labels(out / selftrain.TEACHER, x, tuple(m["classes"]), 0.5)
    assert record == expected.record and 0 < record["kept"] <= 661
    labelled = torch.bincount(sources.load("optdigits-lt", root).train_labels, minlength=10)
    assert m["train_class_counts"] == (labelled + torch.tensor(record["kept_per_class"])).clamp_min(1).tolist()
    assert digits.run(_config(), out, execution=EAGER, data=root, resume=True) == m  # finished: nothing to do


def test_a_run_stopped_after_its_teacher_resumes_to_the_same_model(trained, root, tmp_path):
    out, m = trained
    stopped = tmp_path / "run"
    shutil.copytree(out, stopped)
    for name in ("checkpoint.safetensors", "metrics.json", "calibration.json"):
        (stopped / name).unlink(missing_ok=True)  # as if stopped after the teacher, before the first epoch ended
    again = digits.run(_config(), stopped, execution=EAGER, data=root, resume=True, write_figures=False)
    assert again["self_training"] == m["self_training"] and again["val"] == m["val"]
    a, b = runs.load_run(out)[1], runs.load_run(stopped)[1]
    assert all(torch.equal(x, y) for x, y in zip(tree.leaves(a), tree.leaves(b), strict=True))


def test_self_training_without_unlabelled_images_is_refused_before_a_teacher_trains(root, tmp_path):
    with pytest.raises(RunError, match=r"needs unlabelled images.*unlabeled/"):
        digits.run(_config(dataset="optdigits"), tmp_path / "r", execution=EAGER, data=root)
    assert not (tmp_path / "r" / selftrain.TEACHER).exists()
    with pytest.raises(RunError, match="teacher"):
        digits.prepare(_config(), root)  # the library entry that trains nothing: it needs the teacher's folder


def test_the_threshold_is_checked_and_round_trips():
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        SelfTrainConfig(1.0)
    with pytest.raises(InputError):
        SelfTrainConfig(-0.1)
    assert not SelfTrainConfig().on and SelfTrainConfig(0.9).on
    cfg = _config(self_train=SelfTrainConfig(0.93))
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    old = to_dict(cfg)
    del old["self_train"]  # a config.json written before self-training existed
    assert from_dict(RunConfig, old).self_train == SelfTrainConfig()
