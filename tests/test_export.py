"""hwr.export on tiny trained runs: the ONNX file in onnxruntime and the torch.export program match hwr's own
logits to 1e-4 on real MNIST images and rendered strings, at a batch size other than the export's (dynamic batch)
and, for a transformer strings model, at two widths; the metadata says what the outputs mean; the README's
onnxruntime script runs where torch and hwr cannot be imported; bad input is refused before anything is written."""

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from tiny import EAGER, STRINGS, run_config

import hwr
from hwr import decode, export, models, random, tree
from hwr.config import DataSettings
from hwr.data import augment, sources
from hwr.data import strings as ds
from hwr.errors import InputError, UnknownNameError
from hwr.models.crnn import CRNNConfig
from hwr.runs import RunError
from hwr.tasks import digits
from hwr.tasks import strings as sr

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "onnx_predict.py"
TOL = 1e-4
# One epoch of one step each (parity needs a trained run folder, not accuracy). The BiGRU reads strings of up to
# two digits 32 px wide (8 frames: its unrolled loop is most of the tests' export time); the transformer, any width.
GRU = dataclasses.replace(STRINGS, epochs=1, steps=1, data=dataclasses.replace(STRINGS.data, width=32, max_length=2))
TRANSFORMER = dataclasses.replace(
    STRINGS,
    epochs=1,
    steps=1,
    model_config=CRNNConfig(channels=(4, 8), hidden=8, height=16, encoder="transformer", heads=2, mlp_dim=16),
)


@pytest.fixture(scope="module")
def mnist():
    return sources.load("mnist", DataSettings())


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A tiny digit run, a tiny strings run (the BiGRU: fixed width) and a transformer one (any width)."""
    root = tmp_path_factory.mktemp("runs")
    digits.run(run_config(), root / "digits", execution=EAGER)
    sr.run(GRU, root / "gru", execution=EAGER)
    sr.run(TRANSFORMER, root / "transformer", execution=EAGER)
    return root


@pytest.fixture(scope="module")
def exported(runs_dir, tmp_path_factory):
    """Each run exported once in each format: ``{(run, format): Exported}``; the export's own check (the file
    loaded back and run on check images) for the digits, the strings checked by the tests alone."""
    out = tmp_path_factory.mktemp("exported")
    return {
        (run, fmt): export.export(runs_dir / run, out / f"{run}{suffix}", fmt, check=run == "digits")
        for run in ("digits", "gru", "transformer")
        for fmt, suffix in export.FORMATS.items()
    }


def _runners(exported, run):
    """The ONNX file in onnxruntime and the saved program loaded back, each as uint8 tensor -> logits tensor."""
    session = ort.InferenceSession(str(exported[run, "onnx"].path), providers=["CPUExecutionProvider"])
    program = torch.export.load(io.BytesIO(exported[run, "torch"].path.read_bytes())).module()
    return {
        "onnx": lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0]),
        "torch": lambda x: program(x),
    }


def test_digit_exports_match_hwr_logits(runs_dir, exported, mnist):
    model, params, state, meta = digits.load_run(runs_dir / "digits")
    x = mnist.test_images[:7]  # uint8 (7, 1, 28, 28): a batch of 7, exported with 2
    with torch.inference_mode():
        want = model.apply(params, state, augment.make_transform(None, meta["mean"], meta["std"])(None, x))[0]
    for fmt, run in _runners(exported, "digits").items():
        got = run(x)
        assert got.shape == want.shape == (7, 10), fmt
        assert float((got - want).abs().max()) < TOL, fmt
        assert torch.equal(got.argmax(1), want.argmax(1)), fmt
    assert all(exported["digits", fmt].max_diff < TOL for fmt in export.FORMATS)  # the export's own check
    assert exported["gru", "onnx"].max_diff is None  # check=False: not loaded back


def _strings(run_dir: Path, mnist, n: int) -> ds.Strings:
    spec = ds.StringSpec(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in sr.load_run(run_dir)[3]["data"].items()}
    )
    pool = ds.pools(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels)["test"]
    return ds.render(random.key(3), pool, n, spec)


def _hwr_logits(run_dir: Path, x: torch.Tensor) -> torch.Tensor:
    model, params, state, meta = sr.load_run(run_dir)
    with torch.inference_mode():
        return model.apply(params, state, sr.step.normalise(x, meta["mean"], meta["std"]))[0]


def test_gru_strings_exports_match_hwr_and_read_as_hwr_predict(runs_dir, exported, mnist):
    """The BiGRU is exported at the training width (32 here); a batch of 5 matches hwr's logits, and decoding
    the ONNX logits as the metadata says (frames = ceil(content width / stride)) reads what hwr predict reads."""
    run = runs_dir / "gru"
    s = _strings(run, mnist, 5)
    want = _hwr_logits(run, s.images)
    runners = _runners(exported, "gru")
    for fmt, fn in runners.items():
        got = fn(s.images)
        assert got.shape == want.shape == (5, 8, 11), fmt
        assert float((got - want).abs().max()) < TOL, fmt
    info = exported["gru", "onnx"].info
    assert info["input"]["shape"] == ["N", 1, 16, 32] and not info["dynamic_width"] and info["blank"] == 10
    assert info["output"]["shape"] == ["N", 8, 11]
    logits = runners["onnx"](s.images)
    frames = -(-s.widths // info["stride"])
    readings = decode.to_lists(*decode.greedy(logits, frames, blank=info["blank"])[:2])
    model, params, state, meta = sr.load_run(run)
    images = [im[:, :, : int(w)] for im, w in zip(s.images, s.widths)]  # each cropped to its content
    hwr_read = sr.predict(model, params, state, images, mean=meta["mean"], std=meta["std"], width=32)
    assert readings == [labels for labels, _ in hwr_read]
    with pytest.raises(Exception, match=r"size|shape|Guard"):  # the program is traced at one width
        runners["torch"](torch.zeros(2, 1, 16, 48, dtype=torch.uint8))


def test_transformer_strings_exports_take_any_width(runs_dir, exported, mnist):
    run = runs_dir / "transformer"
    s = _strings(run, mnist, 5)
    info = exported["transformer", "onnx"].info
    assert info["dynamic_width"] and info["output"]["shape"] == ["N", "W / 4", 11]
    runners = _runners(exported, "transformer")
    for n, width in ((3, 48), (5, 72)):  # two batch sizes, two widths (multiples of the stride 4)
        x = torch.nn.functional.pad(s.images[:n], (0, width - 48))
        want = _hwr_logits(run, x)
        assert want.shape == (n, width // 4, 11)
        for fmt, fn in runners.items():
            assert float((fn(x) - want).abs().max()) < TOL, (fmt, width)


def test_metadata_says_what_the_outputs_mean(runs_dir, exported):
    done = exported["digits", "onnx"]
    meta = digits.load_run(runs_dir / "digits")[3]
    props = {p.key: p.value for p in onnx.load(str(done.path)).metadata_props}
    assert json.loads(props["classes"]) == [str(c) for c in meta["classes"]]
    assert json.loads(props["mean"]) == meta["mean"] and json.loads(props["std"]) == meta["std"]
    assert json.loads(props["input"])["shape"] == ["N", 1, 28, 28] and props["hwr_version"] == hwr.__version__
    assert props["task"] == "digits" and props["format"] == "onnx"
    assert (
        json.loads(done.info_path.read_text())
        == done.info
        == {k: v if isinstance(v, str) else json.loads(props[k]) for k, v in done.info.items()}
    )
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "images" and inp.type == "tensor(uint8)" and isinstance(inp.shape[0], str)  # dynamic N
    assert inp.shape[1:] == [1, 28, 28] and out.name == "logits"
    assert session.get_modelmeta().custom_metadata_map["classes"] == props["classes"]
    strings_info = json.loads(exported["transformer", "torch"].info_path.read_text())
    assert strings_info["format"] == "torch" and strings_info["stride"] == 4 and strings_info["classes"][-1] == "9"


def test_only_the_files_are_written_and_the_run_is_untouched(runs_dir, exported):
    folder = exported["digits", "onnx"].path.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        n
        for r in ("digits", "gru", "transformer")
        for n in (f"{r}.onnx", f"{r}.onnx.json", f"{r}.pt2", f"{r}.pt2.json")
    )  # no temporary file left behind
    assert not any(p.name.endswith(".onnx") or p.name.endswith(".pt2") for p in runs_dir.rglob("*"))


@pytest.mark.parametrize("family", models.names())
def test_logits_module_is_the_pure_function_of_every_family(family):
    """What the exporters trace: buffers named as the checkpoint names them, the same logits as ``apply``, the
    parameters copied (the module does not alias or change the caller's tensors)."""
    model = models.get(family)
    params, state = model.init(random.key(0)), model.init_state()
    before = [t.clone() for t in tree.leaves(params)]
    module = export.Logits(model, params, state, lambda x: x.float() / 255)
    names = {f"params.{n}" for n in tree.flatten_names(params)} | {
        f"model_state.{n}" for n in tree.flatten_names(state)
    }
    assert {n for n, _ in module.named_buffers()} == names
    x = (torch.arange(3 * 32 * 64) % 256).to(torch.uint8).reshape(3, 1, 32, 64)
    x = x if family == "crnn" else x[..., :28, :28]
    assert torch.equal(module(x), model.apply(params, state, x.float() / 255)[0])
    next(module.buffers()).add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(tree.leaves(params), before))


def _isolated_site(tmp_path: Path) -> Path:
    """A folder of links to onnxruntime, numpy and PIL (and their bundled libraries) alone."""
    site = Path(np.__file__).resolve().parents[1]
    folder = tmp_path / "site"
    folder.mkdir()
    for name in ("onnxruntime", "numpy", "numpy.libs", "PIL", "pillow.libs"):
        if (site / name).exists():
            (folder / name).symlink_to(site / name)
    return folder


def _isolated(site: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` run by ``python -I -S`` (no site-packages, no environment) with only ``site`` on the path."""
    prefix = f"import sys; sys.path[:0] = [{str(site)!r}]\n"
    return subprocess.run([sys.executable, "-I", "-S", "-c", prefix + code], capture_output=True, text=True)


def test_readme_script_predicts_with_onnxruntime_alone(exported, mnist, runs_dir, tmp_path):
    site = _isolated_site(tmp_path)
    probe = _isolated(
        site,
        "for m in ('torch', 'hwr'):\n    try:\n        __import__(m)\n        print(m)\n    except ImportError:\n        pass\n",
    )
    assert probe.returncode == 0 and probe.stdout == "", probe  # neither torch nor hwr can be imported there
    model, params, state, meta = digits.load_run(runs_dir / "digits")
    x = mnist.test_images[:2]
    with torch.inference_mode():
        probs = torch.softmax(
            model.apply(params, state, augment.make_transform(None, meta["mean"], meta["std"])(None, x))[0], -1
        )
    pictures = {"paper.png": 255 - x[0, 0].numpy(), "mnist.png": x[1, 0].numpy()}  # dark ink on paper; MNIST's
    for i, (name, pixels) in enumerate(pictures.items()):
        Image.fromarray(pixels).save(tmp_path / name)
        argv = [str(SCRIPT), str(exported["digits", "onnx"].path), str(tmp_path / name)]
        p = _isolated(site, f"sys.argv = {argv!r}\nimport runpy\nrunpy.run_path(sys.argv[0], run_name='__main__')")
        assert p.returncode == 0, p.stderr
        label, prob = p.stdout.split()
        assert label == meta["classes"][int(probs[i].argmax())] and abs(float(prob) - float(probs[i].max())) < 1e-3
    assert len(SCRIPT.read_text().split('"""')[2].strip().splitlines()) <= 16  # short enough to quote


def test_bad_input_is_refused_before_anything_is_written(runs_dir, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(RunError, match="not a run folder"):
        export.export(tmp_path, out, "onnx")
    with pytest.raises(RunError, match="does not exist"):
        export.export(tmp_path / "nowhere", out, "onnx")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((runs_dir / "digits" / "config.json").read_text())
    with pytest.raises(RunError, match=r"unfinished run.*--resume"):
        export.export(unfinished, out, "torch")
    with pytest.raises(UnknownNameError, match=r"unknown export format 'tflite'.*onnx"):
        export.export(runs_dir / "digits", out, "tflite")
    with pytest.raises(InputError, match="is a folder"):
        export.export(runs_dir / "digits", tmp_path, "onnx")
    with pytest.raises(InputError, match="--width is for strings"):
        export.export(runs_dir / "digits", out, "onnx", width=64)
    with pytest.raises(InputError, match="--width 0 is not in"):
        export.export(runs_dir / "gru", out, "onnx", width=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]


def test_an_export_that_differs_from_hwr_is_refused_and_not_written(runs_dir, tmp_path, monkeypatch):
    """The check runs the written file before it replaces ``out``: a file whose logits differ (here a writer
    whose program is off by 1e-3) raises, and neither the file, its JSON nor a temporary file is left."""

    def off(g, path):
        path.write_bytes(b"not a program")
        return lambda: lambda x: g.module(x) + 1e-3

    monkeypatch.setattr(export, "_to_torch", off)
    with pytest.raises(RuntimeError, match=r"differs from hwr's logits by 0\.001"):
        export.export(runs_dir / "digits", tmp_path / "m.pt2", "torch")
    assert list(tmp_path.iterdir()) == []
