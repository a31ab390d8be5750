"""``zoo maskformer import-d2`` against the official MaskFormer code's own scores; unsafe and bad checkpoints refused.

The fixture (tests/fixtures/official-tiny*) was made by scripts/make_official_fixture.py with the
official code and detectron2: a random official model and its semantic scores on a 45x70 image.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo_core.model_dir import load_model_dir

FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINT = FIXTURES / "official-tiny.pkl"


def official_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixture's image, normalised as the official model does, and the official scores."""
    data = np.load(FIXTURES / "official-tiny-scores.npz")
    mean, std = (torch.from_numpy(data[k]).view(3, 1, 1) for k in ("pixel_mean", "pixel_std"))
    images = ((torch.from_numpy(data["image"]) - mean) / std).unsqueeze(0)
    return images, torch.from_numpy(data["sem_seg"])


def official_weights() -> dict:
    from zoo_maskformer.unpickle import load_checkpoint_pickle

    return load_checkpoint_pickle(CHECKPOINT)  # the restricted reader, even for our own fixture


def test_import_d2_reproduces_the_official_scores(zoo_cli, tmp_path):
    result = zoo_cli("maskformer", "import-d2", str(CHECKPOINT), "-o", "zoo-model")
    assert result.exit_code == 0, result.output
    model, config = load_model_dir(tmp_path / "zoo-model")
    assert config["model"]["size_divisibility"] == 32  # the official configs' SIZE_DIVISIBILITY
    assert config["converted_from"]["file"] == CHECKPOINT.name

    images, official = official_inputs()
    height, width = images.shape[-2:]  # 45 x 70: detectron2 pads it to 64 x 96
    with torch.no_grad():
        probs = model.predict(images)[0]
        padded = F.pad(images, (0, 96 - width, 0, 64 - height))  # the official inference, step by step
        raw = model(padded)[-1].to_scores((64, 96))[0, :, :height, :width]
    assert (raw - official).abs().max() < 1e-4
    assert (probs - official / official.sum(0, keepdim=True)).abs().max() < 1e-4
    assert official.std() > 0.05


class RunsCode:
    """A pickle that would run a shell command when loaded (the attack the restricted unpickler stops)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_a_pickle_that_would_run_code(zoo_cli, tmp_path):
    marker = tmp_path / "ran"
    payload = official_weights()
    payload["__author__"] = RunsCode(marker)
    evil = tmp_path / "model_final_evil.pkl"
    evil.write_bytes(pickle.dumps(payload, protocol=4))
    result = zoo_cli("maskformer", "import-d2", str(evil), "-o", "out")
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert str(evil) in result.output and f"{os.system.__module__}.system" in result.output
    assert not marker.exists()  # nothing executed
    assert not (tmp_path / "out").exists()  # nothing written


def _write(tmp_path: Path, checkpoint) -> Path:
    path = tmp_path / "model_final_bad.pkl"
    path.write_bytes(pickle.dumps(checkpoint, protocol=4))
    return path


def _edited(edit: str) -> tuple[dict, str]:
    checkpoint = official_weights()
    weights = checkpoint["model"]
    if edit == "missing":
        named = "sem_seg_head.pixel_decoder.adapter_2.norm.bias"
        del weights[named]
    elif edit == "extra":
        named = "sem_seg_head.predictor.transformer.encoder.layers.0.linear1.weight"
        weights[named] = np.zeros((32, 16), dtype=np.float32)
    elif edit == "shape":
        named = "backbone.layers.1.blocks.1.mlp.fc2.weight"
        weights[named] = np.zeros((3, 3), dtype=np.float32)
    elif edit == "not-maskformer":  # e.g. a detectron2 Mask R-CNN checkpoint
        named = "sem_seg_head.predictor.class_embed.weight"
        checkpoint["model"] = {"roi_heads.box_predictor.cls_score.weight": np.zeros((81, 1024), dtype=np.float32)}
    else:  # a ResNet-backbone MaskFormer
        named = "backbone.patch_embed.proj.weight"
        weights.pop(named)
    return checkpoint, named


@pytest.mark.parametrize("edit", ["missing", "extra", "shape", "not-maskformer", "resnet"])
def test_refuses_bad_checkpoints_naming_the_first_bad_key(zoo_cli, tmp_path, edit):
    checkpoint, named = _edited(edit)
    path = _write(tmp_path, checkpoint)
    result = zoo_cli("maskformer", "import-d2", str(path), "-o", "out")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert str(path) in result.output and repr(named) in result.output
    assert not (tmp_path / "out").exists()


def test_refuses_what_is_not_a_checkpoint(zoo_cli, tmp_path):
    for content, says in [
        (pickle.dumps([1, 2, 3]), "not a detectron2 checkpoint"),
        (b"model: not a pickle\n", "not a readable pickle"),
    ]:
        path = tmp_path / "model_final_x.pkl"
        path.write_bytes(content)
        result = zoo_cli("maskformer", "import-d2", str(path), "-o", "out")
        assert result.exit_code == 1 and says in result.output and str(path) in result.output, result.output
    result = zoo_cli("maskformer", "import-d2", "absent.pkl", "-o", "out")
    assert result.exit_code == 1 and "absent.pkl: no such file" in result.output
    assert not (tmp_path / "out").exists()


def test_num_classes_guard_and_nheads_option(zoo_cli, tmp_path):
    result = zoo_cli("maskformer", "import-d2", str(CHECKPOINT), "-o", "out", "--num-classes", "150")
    assert result.exit_code == 1 and "5 classes" in result.output and "class_embed.weight" in result.output
    assert not (tmp_path / "out").exists()
    assert zoo_cli("maskformer", "import-d2", str(CHECKPOINT), "-o", "out", "--nheads", "4").exit_code == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model"]["heads"][0]["args"]["nheads"] == 4


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_reads_arrays_of_every_protocol(tmp_path, protocol):
    from zoo_maskformer.unpickle import load_checkpoint_pickle

    weights = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "scalar": np.float64(2.5), "zero_d": np.array(7.0)}
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": weights, "__author__": "x", "matching_heuristics": True}, protocol))
    loaded = load_checkpoint_pickle(path)["model"]
    assert loaded.keys() == weights.keys()
    for key, value in weights.items():
        assert np.array_equal(loaded[key], value) and loaded[key].dtype == value.dtype
