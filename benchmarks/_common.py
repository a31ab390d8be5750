"""Shared set-up for the run benchmarks: a synthetic dataset and a randomly initialised model."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo_core.model_dir import build_segmentor, save_model_dir

# A realistic per-frame cost: a ResNet-18 backbone with the FCN + OCR cascade at 480x853.
BENCH_MODEL = {
    "num_classes": 124,
    "backbone": {"type": "timm", "args": {"model_name": "resnet18", "out_indices": [2, 3, 4]}},
    "heads": [
        {
            "type": "fcn",
            "args": {
                "in_index": [0, 1, 2],
                "input_transform": "resize_concat",
                "channels": 128,
                "num_convs": 1,
                "loss_weight": 0.4,
            },
        },
        {
            "type": "ocr",
            "args": {"in_index": [0, 1, 2], "input_transform": "resize_concat", "channels": 128, "ocr_channels": 64},
        },
    ],
}


def make_model_dir(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_segmentor(BENCH_MODEL).eval()
    save_model_dir(model, BENCH_MODEL, path, extra={"class_names": None})
    return path


def pipeline_dict(root: Path, weights: Path, split: str = "val") -> dict:
    return {
        "data": {"root": str(root), "split": split},
        "models": [{"name": "bench", "weights": str(weights)}],
        "runtime": {"progress": False},
        "output": {"overlays": 0},
    }
