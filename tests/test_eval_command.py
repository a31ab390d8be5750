"""``zoo eval PRED_DIR --data ROOT``: end to end on a tiny VSPW-layout dataset built here."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from zoo_core.cli import main
from zoo_core.data.classes import VSPW_CLASSES
from zoo_core.evaluation.evaluator import StreamingEvaluator

SHAPE = (16, 24)
VIDEOS = {"vidA": 10, "vidB": 9}
KEYS = {"miou", "mvc8", "mvc16", "pixel_acc", "mean_class_acc", "fwiou", "per_class_iou"}


def raw_mask(rng, t):
    """Raw VSPW ids: a few classes in vertical bands that drift every few frames, plus 0 and 255."""
    raw = np.zeros(SHAPE, np.uint8)
    edge = 8 + t // 3
    raw[:, :edge] = 3
    raw[:, edge:] = 29
    raw[:4, :] = 124
    raw[12:, 20:] = 0
    raw[0, :] = 255
    raw[rng.random(SHAPE) < 0.03] = 61
    return raw


@pytest.fixture
def dataset(tmp_path):
    """(data root, prediction dir, per-video lists of (train-id gt, prediction))."""
    rng = np.random.default_rng(0)
    root, preds_dir = tmp_path / "vspw", tmp_path / "preds"
    (root / "val.txt").parent.mkdir(parents=True)
    (root / "val.txt").write_text("vidA\nvidB")  # no trailing newline, as in some releases
    frames = {}
    for video, count in VIDEOS.items():
        for sub in ("origin", "mask"):
            (root / "data" / video / sub).mkdir(parents=True)
        (preds_dir / video).mkdir(parents=True)
        frames[video] = []
        for t in range(count):
            name = f"{t + 1:08d}"
            raw = raw_mask(rng, t)
            Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(root / "data" / video / "origin" / f"{name}.jpg")
            Image.fromarray(raw, mode="L").save(root / "data" / video / "mask" / f"{name}.png")
            gt = np.where((raw == 0) | (raw == 255), 255, raw.astype(np.int64) - 1).astype(np.uint8)
            pred = np.where(gt == 255, 2, gt)
            pred[rng.random(SHAPE) < 0.1] = 28
            pred = pred.astype(np.uint8)
            Image.fromarray(pred, mode="L").save(preds_dir / video / f"{name}.png")
            frames[video].append((gt, pred))
    return root, preds_dir, frames


def plain_miou(pairs, num_classes=124):
    cm = np.zeros((num_classes, num_classes), np.int64)
    for gt, pred in pairs:
        keep = gt < num_classes
        np.add.at(cm, (gt[keep], pred[keep]), 1)
    present = cm.sum(1) > 0
    iou = np.diag(cm)[present] / (cm.sum(1) + cm.sum(0) - np.diag(cm))[present]
    return iou.mean(), np.diag(cm).sum() / cm.sum()


def test_eval_prints_table_and_writes_json_and_plots(dataset, tmp_path):
    root, preds_dir, frames = dataset
    out_json, plots = tmp_path / "out" / "metrics.json", tmp_path / "plots"
    result = CliRunner().invoke(
        main, ["eval", str(preds_dir), "--data", str(root), "--json", str(out_json), "--plots", str(plots)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out_json.read_text())
    assert set(metrics) == KEYS
    assert list(metrics["per_class_iou"]) == list(VSPW_CLASSES)

    miou, pixel_acc = plain_miou([pair for video in frames.values() for pair in video])
    assert metrics["miou"] == pytest.approx(miou)
    assert metrics["pixel_acc"] == pytest.approx(pixel_acc)
    reference = StreamingEvaluator()
    for video, pairs in frames.items():
        reference.start_video(video)
        for gt, pred in pairs:
            reference.update(pred, gt)
        reference.end_video()
    expected = reference.result(list(VSPW_CLASSES))
    assert metrics["mvc8"] == pytest.approx(expected["mvc8"]) and 0 < metrics["mvc8"] < 1
    assert metrics["mvc16"] is None  # no video is longer than 16 frames
    # Raw 0 and 255 are ignored; raw 30 (mountain) never occurs.
    assert metrics["per_class_iou"]["mountain"] is None and metrics["per_class_iou"]["sky"] is not None

    assert re.search(rf"mIoU +{100 * miou:.2f}\n", result.stdout)
    assert "2 videos, 19 frames" in result.stdout
    assert re.search(r"mVC16 +n/a\n", result.stdout)
    for name in ("per_class_iou.png", "confusion.png"):
        with Image.open(plots / name) as image:
            assert image.format == "PNG" and min(image.size) > 200


def test_missing_prediction_names_video_and_frame(dataset, run_zoo):
    root, preds_dir, _ = dataset
    (preds_dir / "vidB" / "00000004.png").unlink()
    result = run_zoo("eval", preds_dir, "--data", root)
    assert result.returncode != 0
    assert "video 'vidB', frame '00000004'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_video_folder_is_reported(dataset):
    root, preds_dir, _ = dataset
    for path in (preds_dir / "vidA").iterdir():
        path.unlink()
    (preds_dir / "vidA").rmdir()
    result = CliRunner().invoke(main, ["eval", str(preds_dir), "--data", str(root)])
    assert result.exit_code == 1
    assert "no predictions for video 'vidA'" in result.output


def test_rgb_and_out_of_range_predictions_are_rejected(dataset):
    root, preds_dir, _ = dataset
    bad = preds_dir / "vidA" / "00000002.png"
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(bad)
    result = CliRunner().invoke(main, ["eval", str(preds_dir), "--data", str(root)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert str(bad) in result.output and "mode 'RGB'" in result.output

    Image.fromarray(np.full(SHAPE, 200, np.uint8), mode="L").save(bad)
    result = CliRunner().invoke(main, ["eval", str(preds_dir), "--data", str(root)])
    assert result.exit_code == 1
    assert f"{bad}: prediction values 200 are outside the train ids 0..123" in result.output


def test_split_without_masks_is_refused(dataset):
    root, preds_dir, _ = dataset
    (root / "test.txt").write_text("vidC\n")
    (root / "data" / "vidC" / "origin").mkdir(parents=True)
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(root / "data" / "vidC" / "origin" / "00000001.jpg")
    result = CliRunner().invoke(main, ["eval", str(preds_dir), "--data", str(root), "--split", "test"])
    assert result.exit_code == 1
    assert "split 'test' has no ground truth: video 'vidC' has no mask/ folder" in result.output
