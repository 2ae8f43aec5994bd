"""The zero-shot row of an evaluation exists only where the source predicts the target's classes: a digit source
fine-tuned to a user's folder of letters has no do-nothing row (evaluation.json says why, the verdict prints it, no
interval is made up), while a folder of some of its digits is scored as it is (``digits.unknown_classes``)."""

import dataclasses

import optuna
import pytest
import torch
from PIL import Image, ImageDraw
from tiny import EAGER, TINY_CNN

from hwr import tune
from hwr.config import DataSettings
from hwr.tasks import digits
from hwr.tasks.digits.config import FinetuneConfig, RunConfig
from hwr.tune import evaluation

SOURCE = RunConfig(
    model_config=TINY_CNN, recipe="tiny_source", dataset="optdigits", epochs=1, batch_size=32, limit_train=128
)


def _folder(root, classes, counts):
    """``root/{train,val,test}/<class>/`` of drawn strokes, a different pose per class, ``counts`` per split."""
    for split, n in zip(("train", "val", "test"), counts):
        for c, name in enumerate(classes if n else ()):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = Image.new("L", (40, 40), 255)
                ImageDraw.Draw(img).line([(6 + 9 * c, 5), (30 - 4 * c, 35 - i % 4)], fill=0, width=4)
                img.save(root / split / name / f"{i}.png")
    return root


def _spec(dataset: str) -> tune.StudySpec:
    def suggest(trial: optuna.Trial, ctx: tune.StudyContext) -> RunConfig:
        return RunConfig(
            model_config=TINY_CNN,
            dataset=ctx.dataset or dataset,
            epochs=1,
            batch_size=8,
            validation="heldout",
            optim=dataclasses.replace(RunConfig().optim, lr=trial.suggest_float("lr", 1e-3, 1e-2, log=True)),
            finetune=FinetuneConfig(str(ctx.source_dir), "all", reinit=("head",)),
        )

    return tune.StudySpec(
        "letters", "", suggest, ("val_macro_f1",), ("maximize",), 2, lambda s: optuna.samplers.RandomSampler(s),
        source=SOURCE, source_execution=EAGER, eval_seeds=(1, 2),
    )  # fmt: skip


def test_a_folder_of_letters_has_no_zero_shot_row(tmp_path):
    data = DataSettings(tmp_path / "data")
    target = f"folder:{_folder(tmp_path / 'letters', ['a', 'b', 'c'], (16, 4, 4))}"
    spec = _spec(target)
    s = tune.optimize(spec, storage_url=f"sqlite:///{tmp_path / 'db.sqlite'}", root=tmp_path, dataset=target, data=data)
    r = evaluation.evaluate_best(spec, s, root=tmp_path, data=data)
    assert "zero_shot" not in r["contenders"] and "zero_shot" not in r["intervals"]
    why = r["not_applicable"]["zero_shot"]
    assert r["contenders"]["best"]["macro_f1"] and "does not predict the target's classes 'a', 'b', 'c'" in why
    lines = evaluation.verdict(r)
    assert lines[0].startswith("zero-shot (the source as is): not applicable (the source ")
    assert not any(line.startswith("WARNING") for line in lines)


def test_unknown_classes_names_what_the_run_does_not_predict(tmp_path):
    data = DataSettings(tmp_path / "data")
    source = tune.pretrain(SOURCE, tmp_path, execution=EAGER, data=data)
    some = _folder(tmp_path / "some", ["3", "7"], (0, 0, 2))
    mixed = _folder(tmp_path / "mixed", ["7", "x", "y"], (0, 0, 2))
    assert digits.unknown_classes(source, f"folder:{some}", data=data) == ()
    assert digits.unknown_classes(source, f"folder:{mixed}", data=data) == ("x", "y")
    assert digits.unknown_classes(source, "optdigits", data=data) == ()
    assert digits.evaluate_run(source, f"folder:{some}", data=data)["confusion"]  # scored as it is
    with pytest.raises(Exception, match="class 'x' is not one of"):
        digits.evaluate_run(source, f"folder:{mixed}", data=data)
    # image by image, what evaluate_run counts (a study's evaluation resamples these: hwr.tune.stats.image_bootstrap)
    pred, truth = digits.predict_run(source, "optdigits", data=data)
    confusion = torch.zeros(10, 10, dtype=torch.long).index_put_((truth, pred), torch.ones_like(pred), accumulate=True)
    assert confusion.tolist() == digits.evaluate_run(source, "optdigits", data=data)["confusion"]
    few, few_truth = digits.predict_run(source, "optdigits", data=data, limit_test=50)
    assert len(few) == 50 and few_truth.bincount(minlength=10).sum() == 50  # a run's limit_test images
    with pytest.raises(Exception, match="class 'x' is not one of"):
        digits.predict_run(source, f"folder:{mixed}", data=data)
    # the evaluation's image-resampled intervals: a contender whose run cannot be read back gets none (its runs-only
    # interval stands), one scored on other test images none either
    units = [(source, "optdigits", 0)] * 2
    scored = {"best": units, "zero_shot": units, "start": [(tmp_path / "gone", "optdigits", 0)] * 2}
    got = evaluation._image_intervals({**scored, "few": [(source, "optdigits", 50)] * 2}, "few", data, "cpu")
    assert set(got) == {"zero_shot"} and got["zero_shot"]["mean"] == 0.0 and got["zero_shot"]["n"] == 2


def test_a_source_of_more_classes_scores_a_built_in_set_of_some_of_them(tmp_path):
    """Classes match by name for built-in sets too: a run of the digits and an 'x' scores optdigits (10 of its
    11 classes) as it is, so the zero-shot row of a study on optdigits from such a source does not crash."""
    data = DataSettings(tmp_path / "data")
    eleven = _folder(tmp_path / "eleven", [*"0123456789", "x"], (3, 1, 1))
    cfg = dataclasses.replace(SOURCE, dataset=f"folder:{eleven}", batch_size=8, limit_train=0)
    source = tune.pretrain(cfg, tmp_path, execution=EAGER, data=data)
    # the folder names the data set in characters any file system takes; its lock is named after the whole folder
    # (a dotted name such as mnist:lowres=0.5 once shared one lock among every digest)
    assert source.parent == tmp_path / "pretrained" and ":" not in source.name and "/" not in source.name
    assert (source.parent / f"{source.name}.lock").is_file() and source.name.startswith("tiny_source-folder_")
    assert digits.unknown_classes(source, "optdigits", data=data) == ()
    r = digits.evaluate_run(source, "optdigits", data=data)
    assert len(r["confusion"]) == 11 and sum(r["confusion"][10]) == 0  # no optdigits image is an 'x'
    assert sum(map(sum, r["confusion"])) == 530
