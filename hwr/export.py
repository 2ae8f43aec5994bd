"""A trained run as a file other programs run: ONNX (the ``torch.onnx`` dynamo exporter) or a ``torch.export``
program (``.pt2``), both traced from the pure ``model.apply`` with the run's parameters.

The exported graph takes what a reader has at hand, uint8 images with the ink bright on a dark background (as
MNIST), and normalises inside (``x / 255``, then ``(x - mean) / std``, the run's own statistics):

    digits   images (N, C, S, S) uint8, S the training size (28)   -> logits (N, classes)
    strings  images (N, 1, H, W) uint8, H the training height (32) -> logits (N, W / stride, digits + 1),
             per frame, the CTC blank last; a string narrower than W is padded on the right with background
             and decoded over its first ceil(content width / stride) frames, as ``hwr predict`` does

``N`` is dynamic. ``W`` is dynamic (any multiple of the frame stride) for a transformer encoder; a recurrent one
(GRU, LSTM) unrolls its loop over the frames while tracing, so its ``W`` is fixed at export (``width``; the
training width by default) and narrower strings are padded to it. What the outputs mean (class names, mean,
std, geometry, hwr's version) is written into the ONNX file's ``metadata_props`` and, for either format, into
``FILE.json`` beside it. Both files are written atomically. Library code: nothing is printed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

import hwr
from hwr import checkpoint, files, runs, tree
from hwr.data import augment
from hwr.errors import HwrError, InputError, UnknownNameError
from hwr.models import Model
from hwr.tasks import digits, strings
from hwr.tasks.strings import step

__all__ = [
    "FORMATS",
    "MAX_BATCH",
    "Exported",
    "Graph",
    "MissingPackageError",
    "export",
    "graph",
    "info_path",
    "metadata",
]

FORMATS = {"onnx": ".onnx", "torch": ".pt2"}  # format -> its usual suffix
MAX_BATCH = 1 << 16  # the batch dimension's upper bound in the exported graph
_NEEDS = {"onnx": ("onnx", "onnxscript")}  # format -> the packages its exporter imports
_TOLERANCE = 1e-4  # the export is checked against the eager module to this (max abs logit difference)


class MissingPackageError(HwrError, ImportError):
    """A package the asked-for export needs is not installed; the message names the install command."""


class Graph(NamedTuple):
    """What the exporters trace: ``module`` (uint8 images -> logits, the run's parameters as its buffers), an
    ``example`` input, its ``dynamic`` dimensions (``{axis: torch.export.Dim}``), and ``info``, what the file's
    consumer needs to know (``metadata``)."""

    module: torch.nn.Module
    example: torch.Tensor
    dynamic: dict[int, Any]
    info: dict[str, Any]


class Exported(NamedTuple):
    """One export: the model file, its ``FILE.json``, the metadata written, the seconds the export took, and the
    largest absolute logit difference between the file and hwr's own function on check images (``None``:
    not checked: ``check=False``, or onnxruntime not installed)."""

    path: Path
    info_path: Path
    info: dict[str, Any]
    seconds: float
    max_diff: float | None


class Logits(torch.nn.Module):
    """The pure function over fixed parameters, for the exporters only: ``forward(uint8 images) -> logits``.
    The parameters and model state are buffers named as in the checkpoint (``params.head.kernel``)."""

    def __init__(self, model: Model, params: Any, model_state: Any, normalise: Callable[[torch.Tensor], Any]):
        super().__init__()
        self._apply, self._normalise = model.apply, normalise
        self._spec = tree.structure({"params": params, "model_state": model_state})
        self._names = []
        for name, leaf in tree.flatten_names({"params": params, "model_state": model_state}).items():
            *parents, last = name.split(".")
            holder: torch.nn.Module = self
            for part in parents:
                if part not in dict(holder.named_children()):
                    holder.add_module(part, torch.nn.Module())
                holder = holder.get_submodule(part)
            holder.register_buffer(last, leaf.detach().clone())
            self._names.append(name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        leaves = [self.get_buffer(name) for name in self._names]
        state = self._spec.unflatten(leaves)
        logits, _ = self._apply(state["params"], state["model_state"], self._normalise(images), train=False)
        return logits


def info_path(path: str | os.PathLike) -> Path:
    """The metadata file written beside an exported ``path``: ``model.onnx`` -> ``model.onnx.json``."""
    return Path(f"{path}.json")


def _finished(run_dir: Path) -> str:
    """The task of a finished run folder; ``RunError`` for a folder that is not a run or a run not finished."""
    task = runs.task_of(run_dir)
    ckpt = run_dir / runs.CHECKPOINT
    if not ckpt.is_file() or not checkpoint.read_metadata(ckpt).get("complete"):
        raise runs.RunError(
            f"{run_dir} is an unfinished run (no final checkpoint); finish it with "
            f"hwr train --out {run_dir} --resume, then export"
        )
    return task


def _digits_graph(run_dir: Path) -> Graph:
    model, params, state, meta = digits.load_run(run_dir)
    c = model.config
    transform = augment.make_transform(None, meta["mean"], meta["std"])  # as hwr predict normalises
    module = Logits(model, params, state, lambda x: transform(None, x))
    shape = ["N", c.in_channels, c.image_size, c.image_size]
    info = {
        "task": "digits",
        "input": {"name": "images", "dtype": "uint8", "shape": shape, "ink": "bright on dark (MNIST)"},
        "output": {"name": "logits", "shape": ["N", len(meta["classes"])], "softmax": "class probabilities"},
        "classes": [str(k) for k in meta["classes"]],
    }
    return Graph(module, torch.zeros(2, *shape[1:], dtype=torch.uint8), {0: _batch()}, _common(info, meta))


def _strings_graph(run_dir: Path, width: int | None) -> Graph:
    model, params, state, meta = strings.load_run(run_dir)
    c = model.config
    if width is not None and not 0 < width <= strings.MAX_WIDTH:
        raise InputError(f"--width {width} is not in 1..{strings.MAX_WIDTH}; give the widest string's pixels")
    trained = int(meta["data"]["width"])
    w = -(-max(width or trained, c.stride) // c.stride) * c.stride  # a multiple of the frame stride
    module = Logits(model, params, state, lambda x: step.normalise(x, meta["mean"], meta["std"]))
    dynamic_width = c.encoder == "transformer"
    dynamic = {0: _batch()}
    if dynamic_width:
        dynamic[3] = c.stride * torch.export.Dim("frames", min=1, max=strings.MAX_WIDTH // c.stride)
    width_name = f"W (a multiple of {c.stride})" if dynamic_width else w
    info = {
        "task": "strings",
        "input": {
            "name": "images",
            "dtype": "uint8",
            "shape": ["N", c.in_channels, c.height, width_name],
            "ink": "bright on dark (MNIST)",
            "pad": "background (0) on the right, to the input width",
        },
        "output": {
            "name": "logits",
            "shape": ["N", f"W / {c.stride}" if dynamic_width else w // c.stride, c.num_classes + 1],
            "frames": f"a string of content width w reads the first ceil(w / {c.stride}) frames",
        },
        "classes": [str(k) for k in range(c.num_classes)],
        "blank": c.blank,
        "stride": c.stride,
        "dynamic_width": dynamic_width,
        "trained_width": trained,
    }
    example = torch.zeros(2, c.in_channels, c.height, w, dtype=torch.uint8)
    return Graph(module, example, dynamic, _common(info, meta))


def _batch() -> Any:
    return torch.export.Dim("N", min=1, max=MAX_BATCH)


def _common(info: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **info,
        "mean": float(meta["mean"]),
        "std": float(meta["std"]),
        "normalise": "x = (images / 255 - mean) / std, inside the graph",
        "model": meta["model"],
        "hwr_version": hwr.__version__,
    }


def graph(run_dir: str | Path, *, width: int | None = None) -> Graph:
    """The exporters' input for a finished run folder of either task (``width``: strings only, the fixed input
    width of a recurrent encoder, or the example width of a transformer). ``RunError`` for a folder that is not a
    finished run."""
    run_dir = Path(run_dir)
    task = _finished(run_dir)
    if task != "strings" and width is not None:
        raise InputError(f"--width is for strings runs; {run_dir} is a {task} run (its images are square)")
    g = _strings_graph(run_dir, width) if task == "strings" else _digits_graph(run_dir)
    g.module.eval()
    return g._replace(info={**g.info, "run": str(run_dir)})


def _check_out(out: Path, fmt: str) -> None:
    """Refuse an unknown format or an ``out`` that cannot be written before the seconds of tracing: a folder
    (``InputError``), a folder this process cannot write (the ``OSError``, which the CLI words as the
    environment's), a missing exporter package (``MissingPackageError``)."""
    if fmt not in FORMATS:
        raise UnknownNameError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; name the file to write, e.g. {out / ('model' + FORMATS[fmt])}")
    missing = [name for name in _NEEDS.get(fmt, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackageError(
            f"exporting {fmt} needs {', '.join(missing)}; install them with: pip install 'hwr[export]'"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
    os.close(fd)
    os.unlink(probe)


def _check_inputs(g: Graph) -> list[torch.Tensor]:
    """Deterministic uint8 images the export is checked on: a batch of 3 (not the example's 2, so the dynamic
    batch is exercised) and, for a dynamic width, a batch of 5 one frame narrower (wider at the narrowest)."""
    shapes = [(3, *g.example.shape[1:])]
    if 3 in g.dynamic:
        *rest, w = g.example.shape[1:]
        stride = int(g.info["stride"])
        shapes.append((5, *rest, w - stride if w > stride else w + stride))
    made = []
    for shape in shapes:
        n = torch.Size(shape).numel()
        made.append((torch.arange(n, dtype=torch.int64) * 2654435761 % 251).to(torch.uint8).reshape(shape))
    return made


def _to_torch(g: Graph, path: Path) -> Callable[[], Callable[[torch.Tensor], torch.Tensor]]:
    """Write the ``torch.export`` program to ``path``; returns what loads it back as a function (the check)."""
    program = torch.export.export(g.module, (g.example,), dynamic_shapes={"images": g.dynamic})
    buffer = io.BytesIO()  # torch.export.save warns on a file not named .pt2 (the temporary file is not)
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())
    return lambda: torch.export.load(io.BytesIO(path.read_bytes())).module()


def _to_onnx(g: Graph, path: Path) -> Callable[[], Callable[[torch.Tensor], torch.Tensor]] | None:
    """Write the ONNX model (the dynamo exporter) to ``path``, ``info`` in its ``metadata_props``; returns what
    loads the file into onnxruntime as a function (the check), or ``None`` where onnxruntime is not installed."""
    program = torch.onnx.export(
        g.module,
        (g.example,),
        dynamo=True,
        dynamic_shapes={"images": g.dynamic},
        input_names=["images"],
        output_names=["logits"],
        verbose=False,
    )
    program.model.metadata_props.update(metadata(g.info))
    program.save(path, external_data=False)
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    def load() -> Callable[[torch.Tensor], torch.Tensor]:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])

    return load


def _max_diff(g: Graph, run: Callable[[torch.Tensor], torch.Tensor], fmt: str) -> float:
    """The largest absolute logit difference between the exported ``run`` and hwr's function on the check
    images; over 1e-4 raises ``RuntimeError`` (a bug: nothing is written then)."""
    with torch.inference_mode():
        diff = max(float((run(x) - g.module(x)).abs().max()) for x in _check_inputs(g))
    if not diff <= _TOLERANCE:
        raise RuntimeError(f"the exported {fmt} model differs from hwr's logits by {diff:.3g} (> {_TOLERANCE})")
    return diff


def metadata(info: dict[str, Any]) -> dict[str, str]:
    """``info`` as ONNX ``metadata_props`` (string to string): strings as they are, anything else as JSON, so a
    consumer reads ``json.loads(props["classes"])``."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()}


def export(run_dir: str | Path, out: str | Path, fmt: str, *, width: int | None = None, check: bool = True) -> Exported:
    """Export the finished run ``run_dir`` as ``fmt`` (``onnx`` or ``torch``) to ``out``, with ``out.json``
    (``info_path``) beside it, both written atomically. With ``check``, the file is loaded back and run against
    hwr's function before it replaces ``out`` (``max_diff``; over 1e-4 raises ``RuntimeError``: a bug).
    ``width``: strings only (``graph``)."""
    out = Path(out)
    _check_out(out, fmt)
    start = time.perf_counter()
    g = graph(run_dir, width=width)
    g = g._replace(info={**g.info, "format": fmt})
    done: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        run = (_to_onnx if fmt == "onnx" else _to_torch)(g, tmp)
        done["seconds"] = time.perf_counter() - start
        done["diff"] = None if run is None or not check else _max_diff(g, run(), fmt)

    files.atomic_write(out, write)
    files.write_json(info_path(out), g.info)
    return Exported(out, info_path(out), g.info, done["seconds"], done["diff"])
