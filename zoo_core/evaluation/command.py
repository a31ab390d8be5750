"""``zoo eval PRED_DIR --data ROOT``: score a folder of prediction PNGs against a VSPW split."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm import tqdm

from ..errors import DataError
from ..fileio import atomic_write_text
from .confusion import write_confusion
from .evaluator import StreamingEvaluator
from .predictions import read_prediction

SUMMARY = (
    ("miou", "mIoU"),
    ("mvc8", "mVC8"),
    ("mvc16", "mVC16"),
    ("pixel_acc", "pixel acc"),
    ("mean_class_acc", "mean class acc"),
    ("fwiou", "fwIoU"),
)


@click.command("eval")
@click.argument("pred_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--data",
    "root",
    required=True,
    type=click.Path(path_type=Path),
    help="VSPW-format dataset root (holds <split>.txt and data/).",
)
@click.option("--split", default="val", show_default=True, help="Split whose masks are the ground truth.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the metrics (fractions, with per-class IoU) to this JSON file.",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write per-class IoU and confusion-matrix PNGs to this folder.",
)
@click.option(
    "--confusion",
    "confusion_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the confusion matrix (rows = ground truth) to this JSON file, the input of "
    "the confusion-focal loss.",
)
def eval_command(
    pred_dir: Path, root: Path, split: str, json_path: Path | None, plots_dir: Path | None, confusion_path: Path | None
) -> None:
    """Official VSPW mIoU and video consistency (mVC8, mVC16) of PRED_DIR.

    PRED_DIR holds one folder per video of the split and in it one PNG per annotated frame,
    named like the frame (PRED_DIR/<video>/00000001.png), with train ids 0..123 as grey
    values or palette indices.
    """
    from ..data.vspw import VSPWDataset

    dataset = VSPWDataset(root, split)
    evaluator = StreamingEvaluator(num_classes=len(dataset.class_names))
    for video in tqdm(dataset.videos, desc=f"eval {split}", unit="video", leave=False, dynamic_ncols=True):
        frames = dataset.frames(video)
        if frames[0].mask_path is None:
            raise DataError(
                f"split {split!r} has no ground truth: video {video!r} has no mask/ folder; "
                "evaluate a split with masks (e.g. --split val)"
            )
        video_dir = pred_dir / video
        if not video_dir.is_dir():
            raise DataError(
                f"no predictions for video {video!r}: {video_dir} does not exist; PRED_DIR must "
                f"hold one folder per video of split {split!r}"
            )
        evaluator.start_video(video)
        for ref in frames:
            pred_path = video_dir / f"{ref.name}.png"
            if not pred_path.is_file():
                raise DataError(
                    f"no prediction for video {video!r}, frame {ref.name!r}: {pred_path} does not "
                    "exist; predict every annotated frame of the split"
                )
            gt = dataset.load_mask(ref)
            evaluator.update(read_prediction(pred_path), gt, source=str(pred_path))
        evaluator.end_video()

    result = evaluator.result(dataset.class_names)
    click.echo(f"{root} [{split}]: {evaluator.evaluated_videos} videos, {evaluator.evaluated_frames} frames")
    for key, label in SUMMARY:
        shown = "n/a" if result[key] is None else f"{100 * result[key]:.2f}"
        click.echo(f"  {label:<16}{shown:>7}")
    if json_path is not None:
        text = json.dumps(result, indent=2) + "\n"
        atomic_write_text(json_path, text)
        click.echo(f"wrote {json_path}")
    if confusion_path is not None:
        write_confusion(confusion_path, evaluator.confusion_matrix, dataset.class_names)
        click.echo(f"wrote {confusion_path}")
    if plots_dir is not None:
        from .plots import plot_confusion, plot_per_class_iou

        plot_per_class_iou(result, plots_dir / "per_class_iou.png")
        plot_confusion(evaluator.confusion_matrix, dataset.class_names, plots_dir / "confusion.png")
        click.echo(f"wrote {plots_dir / 'per_class_iou.png'} and {plots_dir / 'confusion.png'}")
