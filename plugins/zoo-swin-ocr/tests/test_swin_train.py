"""Proof: the swin-mini FCN + OCR cascade trains end to end on synthetic VSPW data and beats chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from zoo_swin_ocr import model_config

from zoo_core.data.synth import synthesize
from zoo_core.data.vspw import VSPWDataset

NUM_CLASSES = 124


def chance_mious(root, split: str = "val") -> tuple[float, float]:
    """The official mIoU of two data-blind predictors on ``split``: uniform random labels, and the majority class.

    Uniform over C classes, class c with n_c of N pixels expects intersection n_c / C and
    union n_c + N / C - n_c / C. The majority class m everywhere has IoU n_m / N, the others
    0. Averages run over the classes present in the ground truth, as the metric does.
    """
    dataset = VSPWDataset(root, split)
    counts = np.zeros(256, dtype=np.int64)
    for video in dataset.videos:
        for ref in dataset.frames(video):
            counts += np.bincount(dataset.load_mask(ref).ravel(), minlength=256)
    n = counts[:NUM_CLASSES].astype(np.float64)
    present, total = n > 0, n.sum()
    uniform = (n / NUM_CLASSES) / (n + total / NUM_CLASSES - n / NUM_CLASSES)
    return float(uniform[present].mean()), float(n.max() / total / present.sum())


@pytest.mark.slow
def test_swin_mini_ocr_trains_and_beats_chance(run_zoo, tmp_path):
    synthesize(tmp_path / "data", videos=6, frames=8, size=(64, 96))
    pipeline = {
        "data": {"root": str(tmp_path / "data"), "split": "val"},
        "model": model_config("swin-mini", num_classes=NUM_CLASSES),
        "train": {"max_iters": 80, "batch_size": 4, "lr": 1.0e-3, "warmup_iters": 10, "log_every": 5,
                  "checkpoint_every": 0, "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}]},
        "models": [{"name": "swin-mini", "weights": str(tmp_path / "model")}],
        "output": {"overlays": 0},
        # One thread: small ops gain nothing from two, and lose a lot when the cores are shared.
        "runtime": {"device": "cpu", "threads": 1, "progress": False},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))

    result = run_zoo("train", "pipeline.yaml", "--out", "model", timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [json.loads(line)["loss"] for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses

    result = run_zoo("run", "pipeline.yaml", "--out", "run", timeout=300)
    assert result.returncode == 0, result.stderr
    miou = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    uniform, majority = chance_mious(tmp_path / "data")
    assert miou > 2 * max(uniform, majority), (miou, uniform, majority)
