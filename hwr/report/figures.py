"""PNG figures drawn on ``matplotlib.figure.Figure`` (never pyplot, never a backend switch at import, so a
notebook's inline backend is untouched): image grids, confusion matrices, captioned strings, a finished run's
figures (digits: ``draw_run``; strings: ``draw_strings_run``); written atomically."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hwr.calibration import Reliability
from hwr.files import atomic_write
from hwr.tasks import strings
from hwr.tasks.digits import RunFigures

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "STRINGS_FIGURE",
    "compare_figure",
    "draw_run",
    "draw_strings_run",
    "errors_title",
    "mosaic",
    "new_figure",
    "reliability_figure",
    "save_confusion",
    "save_figure",
    "save_image_grid",
    "save_image_rows",
    "save_strings",
    "string_text",
]

STRINGS_FIGURE = "strings.png"  # a strings run's readings of its test strings


def new_figure(**kwargs: Any) -> Figure:
    """``matplotlib.figure.Figure(**kwargs)``, matplotlib imported on the first figure drawn: at the top of this
    module it was a second of the start of every ``hwr`` command, most of which draw nothing."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Atomically save a matplotlib figure as PNG (and close it if pyplot manages it, as Optuna's plots do)."""
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt = sys.modules.get("matplotlib.pyplot")  # loaded by whoever used pyplot; never imported here
        if plt is not None:
            plt.close(fig)


def _to_numpy_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 4:
        x = x[:, 0]  # (N, H, W): first channel
    if x.ndim != 3:
        raise ValueError(f"expected images (N, 1, H, W) or (N, H, W), got shape {x.shape}")
    return x


def save_image_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    title: str | None = None,
    cmap: str = "gray",
) -> Path:
    """A grid of greyscale images ``(N, 1, H, W)`` (uint8 or float), optionally captioned one by one."""
    x = _to_numpy_images(images)
    n = max(len(x), 1)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig = new_figure(figsize=(1.2 * ncols, 1.35 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(x):
            ax.imshow(x[i], cmap=cmap, vmin=0, vmax=255 if x.dtype == np.uint8 else None)
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_image_rows(
    rows: Sequence[tuple[str, torch.Tensor | np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Labelled rows of images of equal count, e.g. ``[("MNIST", a), ("optdigits", b)]`` or originals beside
    their augmentations, so two sets can be compared by eye."""
    arrays = [(name, _to_numpy_images(x)) for name, x in rows]
    ncols = max(len(x) for _, x in arrays)
    fig = new_figure(figsize=(1.1 * ncols, 1.2 * len(arrays)))
    axes = fig.subplots(len(arrays), ncols, squeeze=False)
    for r, (name, x) in enumerate(arrays):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(x):
                ax.imshow(x[c], cmap="gray", vmin=0, vmax=255 if x.dtype == np.uint8 else None)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_confusion(
    confusion: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    title: str = "confusion (rows: true, columns: predicted)",
) -> Path:
    """A confusion-matrix heat map with counts, rows normalised for the colour so rare classes stay visible."""
    c = confusion.cpu().numpy() if isinstance(confusion, torch.Tensor) else np.asarray(confusion)
    k = c.shape[0]
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * k)
    fig = new_figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if c[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(c[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(k), classes, fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def errors_title(shown: int, confusion: torch.Tensor | np.ndarray) -> str:
    """``errors.png``'s title: how many misclassified test images it shows of how many there were in all (the
    confusion matrix's off-diagonal sum)."""
    c = np.asarray(confusion.cpu() if isinstance(confusion, torch.Tensor) else confusion)
    wrong, total = int(c.sum() - np.trace(c)), int(c.sum())
    if wrong == 0:
        return f"no misclassified test images (all {total:,} right)"
    return f"misclassified test images (true->predicted): showing {shown} of {wrong:,} (of {total:,} test images)"


def mosaic(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """``(N, H, W)`` images side by side in one row, ``pad`` pixels of mid-grey between them (one ``imshow``
    instead of an axes per image: a compact figure)."""
    n, h, w = images.shape
    out = np.full((h, n * w + (n - 1) * pad), 128, dtype=np.float32)
    for i, im in enumerate(images):
        out[:, i * (w + pad) : i * (w + pad) + w] = im
    return out


def compare_figure(
    names: tuple[str, str], classes: Sequence[str], rows: Sequence[tuple[np.ndarray, np.ndarray]], *, title: str = ""
) -> Figure:
    """Two data sets side by side: the left panel ``names[0]``, the right ``names[1]``, one row per class (its
    name at the left), the same number of images per row in both; uint8 ``(N, H, W)`` per class and side."""
    if not rows:
        raise ValueError("compare_figure needs at least one class")
    n = max(max(len(a), len(b)) for a, b in rows)
    h, w = rows[0][0].shape[-2:]
    fig = new_figure(figsize=(2 * max(2.0, 0.32 * n) + 0.8, 0.34 * len(rows) + 0.7), layout="constrained")
    axes = fig.subplots(1, 2)
    for side, (ax, name) in enumerate(zip(axes, names)):
        panel = np.full((len(rows) * (h + 2), n * (w + 2) - 2), 255, dtype=np.float32)
        for r, pair in enumerate(rows):
            x = _to_numpy_images(pair[side]).astype(np.float32)
            if len(x):
                m = mosaic(x)
                panel[r * (h + 2) : r * (h + 2) + h, : m.shape[1]] = m
        ax.imshow(panel, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([r * (h + 2) + h / 2 for r in range(len(rows))], list(classes) if side == 0 else [], fontsize=7)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def draw_run(out: Path, figures: RunFigures) -> list[Path]:
    """The figures of a finished run (``hwr.tasks.digits.training.RunFigures``): ``confusion.png`` and ``errors.png``."""
    written = [save_confusion(figures.confusion, out / "confusion.png", classes=figures.classes)]
    written.append(
        save_image_grid(
            figures.errors,
            out / "errors.png",
            titles=figures.titles,
            ncols=10,
            title=errors_title(len(figures.titles), figures.confusion),
        )
    )
    return written


def string_text(labels: Sequence[int], alphabet: str = "0123456789") -> str:
    """A reading as text, class ``k`` written ``alphabet[k]`` (a strings run's classes: ``hwr.tasks.strings.
    alphabet_of``; digits by default), ``(empty)`` for none."""
    return "".join(alphabet[d] for d in labels) or "(empty)"


def save_strings(
    images: torch.Tensor, titles: Sequence[str], path: str | os.PathLike, *, ncols: int = 3, title: str | None = None
) -> Path:
    """A grid of string images ``(N, 1, H, W)`` uint8 (ink bright), each captioned, drawn dark on white."""
    x = images[:, 0].detach().cpu().numpy()
    n = max(len(x), 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    aspect = x.shape[2] / x.shape[1] if len(x) else 5.0
    fig = new_figure(figsize=(ncols * 0.55 * aspect, nrows * 0.95))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(x):
            ax.imshow(255 - x[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(titles[i], fontsize=8, family="monospace")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def draw_strings_run(out: Path, figures: strings.StringsFigures, n: int = 24) -> Path:
    """A finished strings run's ``strings.png``: test strings (3 of each length) with their readings
    (``truth -> reading``, errors marked)."""
    test = figures.test
    lengths = test.lengths.cpu()
    pick = torch.cat([(lengths == k).nonzero().squeeze(1)[:3] for k in range(1, int(lengths.max()) + 1)])[:n]
    images = test.images[pick]
    widths = [int(w) for w in test.widths[pick]]
    crops = [im[..., :w] for im, w in zip(images, widths)]
    read = strings.predict(
        figures.model,
        figures.params,
        figures.model_state,
        crops,
        mean=figures.mean,
        std=figures.std,
        width=images.shape[-1],
    )
    titles = []
    for i, (labels, _conf) in zip(pick.tolist(), read):
        truth = string_text(test.targets[i, : int(test.lengths[i])].tolist(), figures.alphabet)
        got = string_text(labels, figures.alphabet)
        titles.append(f"{truth} -> {got}" + ("" if got == truth else "  ✗"))
    title = "held-out test strings: truth -> reading (greedy CTC)"
    return save_strings(images, titles, out / STRINGS_FIGURE, title=title)


def reliability_figure(panels: Sequence[tuple[str, Reliability, float]], *, title: str = "") -> Figure:
    """Reliability diagrams side by side, one per ``(label, hwr.calibration.reliability table, ECE)``: per
    confidence bin, the accuracy (bars) against the diagonal a calibrated model follows, the gap hatched red, and
    below it the share of readings in each bin (log scale: most readings sit in the top bin)."""
    if not panels:
        raise ValueError("reliability_figure needs at least one panel")
    fig = new_figure(figsize=(3.6 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False, height_ratios=(3, 1), sharex=True)
    for col, (label, r, ece) in enumerate(panels):
        edges = r.edges.detach().cpu().double().numpy()
        count = r.count.detach().cpu().numpy()
        acc, conf = r.accuracy.detach().cpu().numpy(), r.confidence.detach().cpu().numpy()
        left, width = edges[:-1], np.diff(edges)
        seen = count > 0
        top, bottom = axes[0, col], axes[1, col]
        top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        top.bar(left[seen], acc[seen], width[seen], align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
        top.bar(
            left[seen],
            np.abs(conf[seen] - acc[seen]),
            width[seen],
            bottom=np.minimum(conf[seen], acc[seen]),
            align="edge",
            fill=False,
            edgecolor="#cc3333",
            hatch="///",
            linewidth=0.6,
            label="gap to mean confidence",
        )
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_title(f"{label}\nECE {100 * ece:.2f}%", fontsize=9)
        top.set_ylabel("accuracy" if col == 0 else "")
        top.legend(fontsize=7, loc="upper left")
        share = count / max(int(count.sum()), 1)
        bottom.bar(left[seen], share[seen], width[seen], align="edge", color="grey")
        bottom.set_yscale("log")
        bottom.set_xlabel("confidence")
        bottom.set_ylabel("share" if col == 0 else "")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
