"""Proof: volo-mini + U-Net + FCN/OCR trains end to end with `zoo train` and beats chance with `zoo run`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from zoo_volo_unet_ocr import model_config

NUM_CLASSES = 124


@pytest.mark.slow
def test_volo_mini_trains_and_beats_chance(zoo_cli, synthetic_vspw, tmp_path):
    run_dir = tmp_path / "model"
    pipeline = {
        "data": {"root": str(synthetic_vspw.root), "split": "val"},
        "model": model_config("volo-mini", NUM_CLASSES),
        "train": {
            "max_iters": 80,
            "batch_size": 4,
            "lr": 2e-3,
            "warmup_iters": 10,
            "log_every": 10,
            "checkpoint_every": 0,
            "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}],
        },
        "models": [{"name": "volo-mini", "weights": str(run_dir), "tta": {"type": "identity"}}],
        # One thread: these tensors are too small to gain from two, and it avoids oversubscribing a busy machine.
        "runtime": {"device": "cpu", "amp": "none", "progress": False, "threads": 1},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))

    result = zoo_cli("train", path, "--out", run_dir)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(10, 81, 10))
    first, last = np.mean([r["loss"] for r in log[:3]]), np.mean([r["loss"] for r in log[-3:]])
    assert last < 0.8 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"

    result = zoo_cli("run", path, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    miou = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    uniform, majority = synthetic_vspw.chance_miou("val")
    assert miou > max(uniform, majority), f"mIoU {miou:.4f} vs uniform {uniform:.4f}, majority {majority:.4f}"
