"""PNG figures of an evaluation: per-class IoU bars and the row-normalised confusion matrix.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly rather than through
``pyplot``: that renders with the Agg backend without changing the process-wide backend
(which would disturb a notebook importing this module) and keeps no global figure state.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ..fileio import atomic_path


def plot_per_class_iou(result: dict, path: str | os.PathLike) -> None:
    """Horizontal bars of the per-class IoU of ``result`` (as returned by the evaluator),
    best class on top; classes absent from the ground truth are left out."""
    scores = sorted(((iou, name) for name, iou in result["per_class_iou"].items() if iou is not None), reverse=True)
    figure = Figure(figsize=(7, 1.0 + 0.17 * max(len(scores), 1)), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(scores))
    axes.barh(positions, [100 * iou for iou, _ in scores], color="tab:blue")
    axes.set_yticks(positions, [name for _, name in scores], fontsize=6)
    axes.set_ylim(len(scores) - 0.5, -0.5)  # best on top, without the default empty margins
    axes.set_xlim(0, 100)
    axes.set_xlabel("IoU (%)")
    miou = result.get("miou")
    if miou is not None:
        axes.axvline(100 * miou, color="tab:red", linewidth=1, label=f"mIoU {100 * miou:.2f}")
        axes.legend(loc="lower right", fontsize=7)
    axes.set_title(f"Per-class IoU ({len(scores)} classes present in the ground truth)", fontsize=9)
    _save(figure, path)


def plot_confusion(cm: np.ndarray, class_names: list[str], path: str | os.PathLike) -> None:
    """Heatmap of the confusion matrix with each ground-truth row divided by its total, on a
    log colour scale so that small confusions stay visible; empty rows are left blank."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    # Zeros have no logarithm: mask them so they show as the background.
    masked = np.ma.masked_less_equal(normalised, 0)
    size = max(6.0, 0.09 * len(class_names))
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(masked, cmap="viridis", norm=LogNorm(vmin=1e-4, vmax=1.0), interpolation="nearest")
    ticks = np.arange(len(class_names))
    fontsize = 4 if len(class_names) > 40 else 8
    axes.set_xticks(ticks, class_names, rotation=90, fontsize=fontsize)
    axes.set_yticks(ticks, class_names, fontsize=fontsize)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    figure.colorbar(image, ax=axes, shrink=0.6, label="fraction of the ground-truth row")
    _save(figure, path)


def _save(figure: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=150, format="png")
