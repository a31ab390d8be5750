"""The human side of a run: a Markdown table, the evaluation plots and a few overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..evaluation.plots import plot_confusion, plot_per_class_iou
from ..fileio import atomic_path, atomic_write_text

SUMMARY_KEYS = ("miou", "mvc8", "mvc16", "pixel_acc", "mean_class_acc", "fwiou")


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def metrics_table(metrics: dict) -> str:
    lines = ["| metric | value (%) |", "|---|---|"]
    lines += [f"| {key} | {_pct(metrics.get(key))} |" for key in SUMMARY_KEYS if key in metrics]
    return "\n".join(lines)


def write_report(
    report_dir: Path,
    metrics: dict,
    confusion: np.ndarray,
    class_names: Sequence[str],
    overlays: Sequence[tuple[str, np.ndarray]],
) -> None:
    report_dir = Path(report_dir)
    (report_dir / "overlays").mkdir(parents=True, exist_ok=True)
    per_class = sorted(((v, k) for k, v in metrics["per_class_iou"].items() if v is not None), reverse=True)
    absent = [k for k, v in metrics["per_class_iou"].items() if v is None]
    text = [
        "# Results",
        "",
        metrics_table(metrics),
        "",
        "## Per-class IoU (classes present in the ground truth)",
        "",
        "| class | IoU (%) |",
        "|---|---|",
    ]
    text += [f"| {name} | {_pct(value)} |" for value, name in per_class]
    text += ["", f"{len(absent)} classes are absent from the ground truth and excluded from the mean."]
    atomic_write_text(report_dir / "summary.md", "\n".join(text) + "\n")
    plot_per_class_iou(metrics, report_dir / "per_class_iou.png")
    plot_confusion(confusion, list(class_names), report_dir / "confusion.png")
    for name, image in overlays:
        with atomic_path(report_dir / "overlays" / f"{name}.jpg") as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=90)
