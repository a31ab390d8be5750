"""MaskFormer in the zoo's pipelines: the semantic inference by hand, `zoo train`, and `zoo run` in an ensemble."""

from __future__ import annotations

import json
import math

import torch
import yaml
from torch import nn
from zoo_maskformer import model_config

from zoo_core.interfaces import MaskClassification
from zoo_core.model_dir import build_segmentor, read_model_config, save_model_dir
from zoo_core.nn import Segmentor
from zoo_core.testing import TINY_MODEL

NUM_CLASSES = 124


class FixedHead(nn.Module):
    """A head whose output is given: two queries, two classes + no object, 1x2 mask logits."""

    num_classes = 2
    loss_weight = 1.0

    def forward(self, features, prev_output=None):
        class_logits = torch.tensor([[[math.log(2), 0.0, 0.0], [0.0, math.log(2), 0.0]]])  # (.5,.25,.25), (.25,.5,.25)
        mask_logits = torch.tensor([[[[-4.0, 4.0]], [[4.0, -4.0]]]])
        return MaskClassification(class_logits, mask_logits)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_semantic_inference_upsamples_mask_logits_before_the_sigmoid():
    model = Segmentor(nn.Identity(), [FixedHead()])
    probs = model.predict(torch.zeros(1, 3, 1, 4))
    # bilinear (align_corners=False) from 2 to 4 columns samples at -0.25, 0.25, 0.75, 1.25 (clamped):
    # query 0's logits become (-4, -2, 2, 4), query 1's (4, 2, -2, -4); then sigmoid, then
    # score_c = sum_q softmax(class)[q, c] * mask_q, "no object" dropped; normalised per pixel.
    for column, logit in enumerate((-4.0, -2.0, 2.0, 4.0)):
        m0, m1 = sigmoid(logit), sigmoid(-logit)
        scores = torch.tensor([0.5 * m0 + 0.25 * m1, 0.25 * m0 + 0.5 * m1])
        torch.testing.assert_close(probs[0, :, 0, column], scores / scores.sum())
    # interpolating the sigmoids instead would give column 1 a different value
    wrong = 0.75 * sigmoid(-4) + 0.25 * sigmoid(4)
    assert abs(probs[0, 0, 0, 1].item() - (0.5 * wrong + 0.25 * (1 - wrong)) / 0.75) > 1e-3


def test_mini_predicts_any_size_with_size_divisibility():
    torch.manual_seed(0)
    model = build_segmentor(model_config("maskformer-mini", num_classes=5)).eval()
    assert model.size_divisibility == 32
    with torch.no_grad():
        probs = model.predict(torch.randn(1, 3, 50, 77))
    assert probs.shape == (1, 5, 50, 77)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 50, 77))


def pipeline(root, model_dir, max_iters: int) -> dict:
    return {
        "data": {"root": str(root), "split": "val"},
        "model": model_config("maskformer-mini", num_classes=NUM_CLASSES),
        "train": {
            "max_iters": max_iters,
            "batch_size": 4,
            "lr": 1.0e-3,
            "warmup_iters": min(5, max_iters),
            "log_every": 5,
            "checkpoint_every": 0,
            "loss": {"type": "maskformer"},
            "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}],
        },
        "models": [{"name": "maskformer-mini", "weights": str(model_dir)}],
        "output": {"overlays": 0},
        # One thread: small ops gain nothing from two, and lose a lot when the cores are shared.
        "runtime": {"device": "cpu", "amp": "none", "threads": 1, "progress": False},
    }


def test_zoo_train_lowers_the_loss(zoo_cli, synthetic_vspw, tmp_path):
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline(synthetic_vspw.root, tmp_path / "model", 30)))
    result = zoo_cli("train", "pipeline.yaml", "--out", "model")
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log]
    assert len(losses) == 6 and losses[-1] + losses[-2] < 0.9 * (losses[0] + losses[1]), losses
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model"]["heads"][0]["type"] == "maskformer" and config["model"]["size_divisibility"] == 32


def test_maskformer_in_an_ensemble_with_a_plain_model_and_tta(zoo_cli, synthetic_vspw, tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    config = model_config("maskformer-mini", num_classes=NUM_CLASSES)
    class_names = read_model_config(tiny_model_dir)["class_names"]  # an ensemble's models share their classes
    save_model_dir(build_segmentor(config).eval(), config, tmp_path / "maskformer", extra={"class_names": class_names})
    run = {
        "data": {"root": str(synthetic_vspw.root), "split": "val"},
        "models": [
            {"name": "maskformer", "weights": str(tmp_path / "maskformer"), "tta": {"type": "flip"}},
            {
                "name": "tiny",
                "weights": str(tiny_model_dir),
                "tta": {"type": "multiscale-flip", "args": {"scales": [0.75, 1.0]}},
            },
        ],
        "ensemble": {"type": "mean"},
        "output": {"overlays": 0},
        "runtime": {"device": "cpu", "amp": "none", "threads": 1, "progress": False},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(run))
    result = zoo_cli("run", "pipeline.yaml", "--out", "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1
    components = json.loads((tmp_path / "run" / "pipeline.json").read_text())["provenance"]["components"]
    assert {"kind": "head", "name": "maskformer", "distribution": "zoo-maskformer"}.items() <= next(
        c for c in components if c["name"] == "maskformer"
    ).items()


def test_bad_sizes_and_a_plain_head_are_one_line_errors(zoo_cli, synthetic_vspw, tmp_path):
    bad_size = pipeline(synthetic_vspw.root, tmp_path / "model", 2)
    bad_size["model"]["heads"][0]["args"]["conv_dim"] = 48
    plain_head = pipeline(synthetic_vspw.root, tmp_path / "model", 2)
    plain_head["model"] = TINY_MODEL  # per-pixel logits: not for the maskformer loss
    for config, message in (
        (bad_size, "error: head 'maskformer' conv_dim must be a multiple of 32 (GroupNorm(32)), got 48"),
        (plain_head, "loss 'maskformer' needs a mask-classification head (such as 'maskformer'), got Tensor"),
    ):
        (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
        result = zoo_cli("train", "pipeline.yaml", "--out", "model")
        assert result.exit_code == 2 and "Traceback" not in result.output
        (line,) = [x for x in result.output.splitlines() if x.startswith("error: ")]
        assert message in line
        assert not (tmp_path / "model" / "model.safetensors").exists()
