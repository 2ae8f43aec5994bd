"""The `hwr` command end to end on small data: train, Ctrl-C + resume equivalence, evaluate, finetune,
predict on real PNG/JPEG files, and every bad input getting one line and exit code 2."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import bad, bad_here, hwr, png_header_only
from PIL import Image
from tiny import TINY_CNN, TINY_STUDY

from hwr import checkpoint, tree
from hwr.data import sources

pytestmark = pytest.mark.slow

SMALL = ["--limit-train", "3000", "--limit-test", "500", "--batch-size", "64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A usable MNIST model: the fast recipe for 2 epochs on 20,000 images (eager: no compile in this fixture;
    channels-last, which ATen's CPU convolutions and max-pool run 1.6x faster than NCHW at batch 128 on one
    thread: ``benchmarks/step.py --variants hwr_eager,hwr_eager_channels_last``)."""
    out = tmp_path_factory.mktemp("runs") / "mnist"
    hwr(
        "train",
        "--recipe",
        "fast",
        "--epochs",
        "2",
        "--limit-train",
        "20000",
        "--limit-test",
        "2000",
        "--no-compile",
        "--memory-format",
        "channels_last",
        "--out",
        str(out),
        fresh=True,  # the console script in a fresh interpreter, end to end (cli_run)
    )
    return out


def test_train_writes_run_folder(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "metrics.json", "checkpoint.safetensors", "confusion.png", "errors.png"} <= names
    m = json.loads((trained / "metrics.json").read_text())
    assert len(m["epochs"]) == 2 and m["test"]["accuracy"] > 0.95
    assert set(m["test"]["per_class"]) == {"precision", "recall", "f1", "support"}
    assert len(m["test"]["confusion"]) == 10 and m["test"]["count"] == 2000
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["recipe"] == "fast" and cfg["epochs"] == 2


def test_interrupt_and_resume_equals_uninterrupted(tmp_path):
    # compiled, one pinned candidate (which the resume must reuse), the graph test_compiled_train_matches_schema
    # builds too: one cold build in the suite, one compile per process
    args = ["train", "--recipe", "seed", "--epochs", "3", *SMALL, "--compile-candidate", "channels_last+aten"]
    full = tmp_path / "full"
    hwr(*args, "--out", str(full))
    for attempt in range(3):  # a run that finished before the signal landed (seen once in many) is tried again
        cut = tmp_path / f"cut{attempt}"
        # A job started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, and
        # Python then never raises KeyboardInterrupt; give the child the default disposition, as a terminal would.
        proc = subprocess.Popen(
            [sys.executable, "-m", "hwr.cli", *args, "--out", str(cut)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        ckpt = cut / "checkpoint.safetensors"
        while not ckpt.exists() and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # Ctrl-C during the second epoch
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0 or not (cut / "metrics.json").exists():
            break
    assert proc.returncode == 130, err
    assert "--resume" in err and not (cut / "metrics.json").exists()
    assert 1 <= checkpoint.read_metadata(ckpt)["epochs_done"] < 3
    hwr("train", "--out", str(cut), "--resume")
    a, _ = checkpoint.load_flat(full / "checkpoint.safetensors")
    b, _ = checkpoint.load_flat(ckpt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (full, cut))
    assert ma["execution"]["candidate"] == mb["execution"]["candidate"] == "channels_last+aten"
    assert ma["test"] == mb["test"]
    assert [e["train_loss"] for e in ma["epochs"]] == [e["train_loss"] for e in mb["epochs"]]


def test_compiled_train_matches_schema(tmp_path):
    out = tmp_path / "c"
    hwr(
        "train",
        "--recipe",
        "seed",
        "--epochs",
        "1",
        *SMALL,
        "--compile-candidate",  # the interrupted run's graph (autotune's record: tests/engine/test_execution.py)
        "channels_last+aten",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["timing"]["compile_seconds"] > 0 and m["test"]["accuracy"] > 0.8
    used = m["execution"]  # where and how it ran: metrics.json, never config.json
    assert used["device"] == "cpu" and used["compile"] is True and used["memory_format"] == "channels_last"
    assert used["candidate"] == "channels_last+aten" and used["requested"]["candidate"] == "channels_last+aten"
    cfg = json.loads((out / "config.json").read_text())
    assert not {"compile", "precision", "memory_format", "device"} & set(cfg)


def test_evaluate(trained, capsys):
    out = hwr("evaluate", str(trained)).stdout
    assert "macro_f1" in out and "accuracy" in out
    # 26 letter classes against a 10-digit head; offline, the data cannot even be obtained: one clear line either way
    bad_here(
        capsys, "evaluate", str(trained), "--dataset", "emnist-letters", match=("predicts 10 classes", "cannot obtain")
    )


def test_finetune_optdigits(trained, tmp_path):
    out = tmp_path / "ft"
    hwr(
        "finetune",
        "--from",
        str(trained),
        "--dataset",
        "optdigits-lt",
        "--trainable",
        "last",
        "--backbone-lr-mult",
        "0.1",
        "--class-weights",
        "effective",
        "--augment",
        "light",
        "--epochs",
        "3",
        "--no-compile",
        "--out",
        str(out),
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["finetune"]["trainable"] == "last" and m["reinitialised"] == []
    assert m["test"]["macro_f1"] > 0.5


def test_finetune_with_the_long_tail_levers(trained, tmp_path, capsys):
    out = tmp_path / "lt"
    hwr(
        "finetune",
        "--from",
        str(trained),
        "--dataset",
        "optdigits-lt:ratio=50,order=1",
        "--class-weights",
        "logit_adjust",
        "--tau",
        "0.8",
        "--defer",
        "0.5",
        "--sampling",
        "sqrt",
        "--mixup",
        "0.4",
        "--cutmix",
        "1",
        "--mix-prob",
        "0.5",
        "--l2sp",
        "1e-3",
        "--wise",
        "--crt-epochs",
        "1",
        "--tau-norm",
        "0.5",
        "--posthoc-tau",
        "1",
        "--validation",
        "heldout",
        "--epochs",
        "2",
        "--no-compile",
        "--out",
        str(out),
    )
    c = json.loads((out / "config.json").read_text())
    assert c["dataset"] == "optdigits-lt:ratio=50,order=1" and c["validation"] == "heldout"
    assert c["loss"] == {**c["loss"], "weighting": "logit_adjust", "tau": 0.8, "defer": 0.5}
    assert c["mix"] == {"mixup": 0.4, "cutmix": 1.0, "prob": 0.5} and c["sampling"] == "sqrt"
    assert c["finetune"]["wise"] is True and c["finetune"]["l2sp"] == 1e-3
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["post_training"]) == {
        "wise_alpha",
        "wise_val_macro_f1",
        "wise_crossfit",
        "crt_epochs",
        "tau_norm",
        "posthoc_tau",
    }
    assert m["val"]["count"] == 400
    bad_here(
        capsys,
        "finetune",
        "--from",
        str(trained),
        "--dataset",
        "optdigits-lt:ratio=x",
        "--out",
        str(tmp_path / "x"),
        match=("not a number",),
    )
    bad_here(
        capsys,
        "finetune",
        "--from",
        str(trained),
        "--dataset",
        "mnist",
        "--validation",
        "heldout",
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--out",
        str(tmp_path / "y"),
        match=("no held-out validation",),
    )


def _digit_files(folder: Path, n: int = 40) -> list[tuple[Path, int]]:
    ds = sources.load("mnist")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds.test_labels), n, replace=False)
    files = []
    for k, i in enumerate(idx):
        ink = ds.test_images[int(i), 0].numpy()
        size = int(rng.integers(60, 400))
        img = Image.fromarray(ink).resize((size, size), Image.BICUBIC)
        a = np.asarray(img).astype(np.float32) / 255.0
        style = k % 4
        if style == 0:  # light on dark, grey PNG
            arr, ext = (a * 255).astype(np.uint8), "png"
        elif style == 1:  # dark on white, JPEG
            arr, ext = ((1 - a) * 255).astype(np.uint8), "jpg"
        else:  # dark ink on a coloured background, RGB
            bg = np.array([230, 200, 120] if style == 2 else [150, 210, 250], dtype=np.float32)
            fg = np.array([20, 30, 90], dtype=np.float32)
            arr = (bg * (1 - a[..., None]) + fg * a[..., None]).astype(np.uint8)
            ext = "png" if style == 2 else "jpg"
        path = folder / f"d{k}_{int(ds.test_labels[int(i)])}.{ext}"
        Image.fromarray(arr).save(path, quality=92) if ext == "jpg" else Image.fromarray(arr).save(path)
        files.append((path, int(ds.test_labels[int(i)])))
    return files


def test_predict_real_files(trained, tmp_path):
    files = _digit_files(tmp_path)
    seen = tmp_path / "seen"
    out = hwr("predict", "--run", str(trained), *[str(p) for p, _ in files], "--save-input", str(seen)).stdout
    correct = 0
    for path, label in files:
        line = next(ln for ln in out.splitlines() if path.name in ln)
        top1 = line.split("│")[2].split()[0]
        correct += top1 == str(label)
    assert correct / len(files) >= 0.95, out
    assert len(list(seen.glob("*.png"))) == len(files)
    assert Image.open(next(seen.glob("*.png"))).size == (28, 28)


def test_bad_inputs(trained, tmp_path, capsys):
    # the console script in a fresh interpreter
    bad("train", "--dataset", "nope", "--out", str(tmp_path / "x"), match="unknown dataset", fresh=True)
    bad_here(capsys, "train", "--model", "nope", *SMALL, "--out", str(tmp_path / "y"), match="unknown model")
    bad_here(capsys, "evaluate", str(tmp_path), match="not a run folder")
    empty = tmp_path / "nockpt"
    empty.mkdir()
    (empty / "config.json").write_text((trained / "config.json").read_text())
    bad_here(capsys, "evaluate", str(empty), match="no checkpoint")
    bad_here(capsys, "train", "--out", str(trained), "--recipe", "seed", match="already holds a run")
    # a checkpoint from another architecture
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((trained / "config.json").read_text())
    flat, meta = checkpoint.load_flat(trained / "checkpoint.safetensors")
    meta["model_config"]["hidden"] = 64
    checkpoint.save(other / "checkpoint.safetensors", tree.unflatten_names(flat), meta)
    bad_here(capsys, "evaluate", str(other), match="another architecture")
    # truncated checkpoint
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "config.json").write_text((trained / "config.json").read_text())
    data = (trained / "checkpoint.safetensors").read_bytes()
    (trunc / "checkpoint.safetensors").write_bytes(data[: len(data) // 3])
    bad_here(capsys, "predict", "--run", str(trunc), str(tmp_path / "any.png"), match="corrupt or truncated")
    # images: not an image, all background, absurdly large
    (tmp_path / "notes.png").write_text("this is not an image")
    bad_here(capsys, "predict", "--run", str(trained), str(tmp_path / "notes.png"), match="notes.png")
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    bad_here(capsys, "predict", "--run", str(trained), str(tmp_path / "blank.png"), match="blank.png")
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(50_000, 50_000))
    bad_here(capsys, "predict", "--run", str(trained), str(huge), match="huge.png")
    bad_here(capsys, "predict", "--run", str(trained), str(tmp_path / "missing.png"), match="missing.png")


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path):
    out = tmp_path / "nan"
    p = hwr(
        "train",
        "--recipe",
        "seed",
        "--epochs",
        "3",
        "--lr",
        "1e30",
        *SMALL,
        "--no-compile",
        "--out",
        str(out),
        check=False,
    )
    assert p.returncode == 1 and "non-finite" in (p.stdout + p.stderr)
    assert not (out / "metrics.json").exists()
    if (out / "checkpoint.safetensors").exists():  # divergence after epoch 1 leaves that epoch's state
        flat, _ = checkpoint.load_flat(out / "checkpoint.safetensors")
        assert all(torch.isfinite(v.float()).all() for v in flat.values())


def test_bad_device_is_one_line(tmp_path, capsys):
    """--device is validated at the edge, before any data is loaded: one line, exit 2, on every command."""
    from hwr import cli
    from hwr.engine.execution import Execution
    from hwr.tasks import digits as experiment
    from hwr.tasks.digits.config import RunConfig

    run = tmp_path / "run"
    experiment.run(
        RunConfig(
            model_config=TINY_CNN,
            dataset="optdigits",
            epochs=1,
            batch_size=32,
            limit_train=256,
            limit_test=100,
        ),
        run,
        execution=Execution(device="cpu", compile=False),
        write_figures=False,
    )
    png = tmp_path / "d.png"
    Image.new("L", (28, 28), 0).save(png)
    bad_here(
        capsys, "train", "--device", "nosuch", *SMALL, "--out", str(tmp_path / "x"), match="unknown device 'nosuch'"
    )
    bad_here(
        capsys,
        "finetune",
        "--from",
        str(run),
        "--device",
        "nosuch",
        "--out",
        str(tmp_path / "y"),
        match="unknown device",
    )
    bad_here(capsys, "evaluate", str(run), "--device", "nosuch", match="unknown device")
    bad_here(capsys, "predict", "--run", str(run), str(png), "--device", "nosuch", match="unknown device")
    bad_here(
        capsys,
        "study",
        "run",
        str(TINY_STUDY),
        "--device",
        "nosuch",
        "--storage",
        f"sqlite:///{tmp_path}/s.db",
        "--root",
        str(tmp_path / "runs"),
        match="unknown device",
    )
    if not torch.cuda.is_available():
        bad_here(capsys, "train", "--device", "cuda", *SMALL, "--out", str(tmp_path / "z"), match="no CUDA GPU")
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs").exists()  # refused before anything ran
    assert cli.main(["evaluate", str(run), "--device", "cpu"]) == 0  # a run evaluates on any device it names
    assert "macro_f1" in capsys.readouterr().out


def test_help_lists_commands():
    out = hwr("--help").stdout
    for cmd in ("train", "evaluate", "finetune", "predict", "data", "study"):
        assert cmd in out
    assert os.environ.get("HWR_NO_MALLOPT") != "1"


def test_an_internal_error_is_reported_as_a_bug_not_as_bad_input(monkeypatch, capsys, tmp_path):
    from hwr import cli
    from hwr.cli import digits as cli_digits

    somewhere = tmp_path / "somewhere"  # a digit run folder: evaluate dispatches to hwr.cli.digits
    somewhere.mkdir()
    (somewhere / "config.json").write_text("{}")

    def broken(args):
        raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")

    monkeypatch.setattr(cli_digits, "cmd_evaluate", broken)
    assert cli.main(["evaluate", str(somewhere)]) == 1
    err = capsys.readouterr().err
    assert "internal error (TypeError" in err and "bug in hwr" in err and "--debug" in err
    with pytest.raises(TypeError):
        cli.main(["--debug", "evaluate", str(somewhere)])
    from hwr.errors import InputError

    monkeypatch.setattr(cli_digits, "cmd_evaluate", lambda a: (_ for _ in ()).throw(InputError("bad value x")))
    assert cli.main(["evaluate", str(somewhere)]) == 2 and "hwr: error: bad value x" in capsys.readouterr().err


def test_predict_reads_every_file_and_reports_each_bad_one(trained, tmp_path):
    good = _digit_files(tmp_path, 3)
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    missing = tmp_path / "gone.jpg"
    p = hwr("predict", "--run", str(trained), str(good[0][0]), str(junk), str(good[1][0]), str(missing), check=False)
    assert p.returncode == 2
    assert good[0][0].name in p.stdout and good[1][0].name in p.stdout  # both readable files predicted
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("hwr: error")]
    assert len(lines) == 2 and "notes.png" in lines[0] and "gone.jpg" in lines[1]


def test_offline_reaches_training_data(tmp_path):
    """``HWR_OFFLINE=1`` is read at the CLI edge and reaches the run's data source: no internet attempt, one line."""
    env = {"HWR_OFFLINE": "1", "HWR_DATA": str(tmp_path / "data")}
    bad(
        "train",
        "--dataset",
        "kmnist",
        "--no-compile",
        "--out",
        str(tmp_path / "run"),
        match="network downloads disabled",
        env=env,
    )


@pytest.mark.parametrize("argv", [["study", "best", "x", "--workers", "0"], ["study", "run", "x", "--workers", "two"]])
def test_study_workers_must_be_a_positive_count(argv, capsys):
    from hwr import cli

    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and "--workers: must be a whole number >= 1" in capsys.readouterr().err
