"""Proof: the swin-mini FCN + OCR cascade trains end to end on synthetic VSPW data and beats chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from zoo_swin_ocr import model_config

NUM_CLASSES = 124


@pytest.mark.slow
def test_swin_mini_ocr_trains_and_beats_chance(zoo_cli, synthetic_vspw, tmp_path):
    pipeline = {
        "data": {"root": str(synthetic_vspw.root), "split": "val"},
        "model": model_config("swin-mini", num_classes=NUM_CLASSES),
        "train": {
            "max_iters": 80,
            "batch_size": 4,
            "lr": 1.0e-3,
            "warmup_iters": 10,
            "log_every": 5,
            "checkpoint_every": 0,
            "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}],
        },
        "models": [{"name": "swin-mini", "weights": str(tmp_path / "model")}],
        "output": {"overlays": 0},
        # One thread: small ops gain nothing from two, and lose a lot when the cores are shared.
        "runtime": {"device": "cpu", "amp": "none", "threads": 1, "progress": False},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))

    result = zoo_cli("train", "pipeline.yaml", "--out", "model")
    assert result.exit_code == 0, result.output
    losses = [json.loads(line)["loss"] for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses

    result = zoo_cli("run", "pipeline.yaml", "--out", "run")
    assert result.exit_code == 0, result.output
    miou = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    uniform, majority = synthetic_vspw.chance_miou("val")
    assert miou > 2 * max(uniform, majority), (miou, uniform, majority)
