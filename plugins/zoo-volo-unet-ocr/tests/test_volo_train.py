"""Proof: volo-mini + U-Net + FCN/OCR trains end to end with `zoo train` and beats chance with `zoo run`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from zoo_volo_unet_ocr import model_config

from zoo_core.data.synth import synthesize
from zoo_core.data.vspw import VSPWDataset

NUM_CLASSES = 124


def chance_baselines(root, split: str) -> tuple[float, float]:
    """mIoU of a uniformly random prediction (expected) and of predicting the most frequent class everywhere.

    Over the labelled pixels, for the classes present in the ground truth (as the metric averages):
    uniform: class c with n_c of N pixels gets n_c / K true positives and N / K predictions, so
    IoU_c = (n_c / K) / (n_c + N / K - n_c / K); majority: IoU = n_max / N for that class, 0 for the others.
    """
    dataset = VSPWDataset(root, split)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for video in dataset.videos:
        for frame in dataset.iter_video(video):
            labels = frame.mask[frame.mask != 255].astype(np.int64)
            counts += np.bincount(labels, minlength=NUM_CLASSES)
    present = counts[counts > 0].astype(np.float64)
    total, k = present.sum(), NUM_CLASSES
    uniform = float(np.mean((present / k) / (present + total / k - present / k)))
    majority = float(present.max() / total / len(present))
    return uniform, majority


@pytest.mark.slow
def test_volo_mini_trains_and_beats_chance(run_zoo, tmp_path):
    root = tmp_path / "data"
    synthesize(root, videos=6, frames=8, size=(64, 96), seed=0)
    run_dir = tmp_path / "model"
    pipeline = {
        "data": {"root": str(root), "split": "val"},
        "model": model_config("volo-mini", NUM_CLASSES),
        "train": {"max_iters": 80, "batch_size": 4, "lr": 2e-3, "warmup_iters": 10, "log_every": 10,
                  "checkpoint_every": 0, "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}]},
        "models": [{"name": "volo-mini", "weights": str(run_dir), "tta": {"type": "identity"}}],
        # One thread: these tensors are too small to gain from two, and it avoids oversubscribing a busy machine.
        "runtime": {"device": "cpu", "progress": False, "threads": 1},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))

    result = run_zoo("train", path, "--out", run_dir, timeout=300)
    assert result.returncode == 0, result.stderr
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(10, 81, 10))
    first, last = np.mean([r["loss"] for r in log[:3]]), np.mean([r["loss"] for r in log[-3:]])
    assert last < 0.8 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"

    result = run_zoo("run", path, "--out", tmp_path / "run", timeout=300)
    assert result.returncode == 0, result.stderr
    miou = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    uniform, majority = chance_baselines(root, "val")
    assert miou > max(uniform, majority), f"mIoU {miou:.4f} vs uniform {uniform:.4f}, majority {majority:.4f}"
