"""The UperNet presets: Swin-L + UperNet as mmsegmentation builds it (the 5th place's baseline), and its test size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from zoo_swin_ocr import PRESETS, model_config

from zoo_core.model_dir import build_segmentor
from zoo_core.testing import check_backbone

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_bn(c_in: int, c_out: int, k: int = 1) -> int:
    """mmseg's ConvModule: a conv without bias, then BN (weight and bias)."""
    return c_in * c_out * k * k + 2 * c_out


@pytest.mark.parametrize("classes", [124, 150])
def test_full_size_swin_l_uper_parameters(classes):
    import timm

    with torch.device("meta"):
        model = build_segmentor(model_config("swin-l-uper", num_classes=classes))
        reference = timm.create_model("swin_large_patch4_window12_384")
    backbone, (aux, uper) = model.backbone, model.heads
    assert backbone.channels == [192, 384, 768, 1536] and backbone.strides == [4, 8, 16, 32]
    assert backbone.depths == (2, 2, 18, 2) and backbone.model.layers_3.blocks[1].drop_path2.drop_prob == pytest.approx(
        0.3
    )
    # timm's Swin-L without its final norm and classifier, plus a LayerNorm on each of the four outputs (mmseg)
    dropped, out_norms = 2 * 1536 + (1536 * 1000 + 1000), 2 * (192 + 384 + 768 + 1536)
    assert count(backbone) == count(reference) - dropped + out_norms

    c, k = 512, classes
    ppm = 4 * conv_bn(1536, c)
    fpn = sum(conv_bn(x, c) for x in (192, 384, 768)) + 3 * conv_bn(c, c, 3)
    assert count(uper) == ppm + conv_bn(1536 + 4 * c, c, 3) + fpn + conv_bn(4 * c, c, 3) + c * k + k
    assert count(aux) == conv_bn(768, 256, 3) + 256 * k + k
    assert (aux.loss_weight, uper.loss_weight, aux.stride, uper.stride) == (0.4, 1.0, 16, 4)
    # the Swin paper (Table 3) and mmsegmentation list UperNet Swin-L (150 classes) at 234M parameters
    assert round(count(model) / 1e6) == 234


def test_ocr_presets_are_unchanged():
    for name in ("swin-l", "swin-l-deep", "swin-mini", "swin-mini-deep"):
        preset = PRESETS[name]
        assert (preset.decoder, preset.out_indices, preset.output_norms) == ("ocr", (1, 2, 3), False), name
    mini = build_segmentor(model_config("swin-mini"))
    assert mini.backbone.out_norms is None and not any("out_norms" in key for key in mini.state_dict())
    # the UperNet presets differ from their OCR sibling only in outputs and heads
    for ocr, uper in (("swin-l", "swin-l-uper"), ("swin-mini", "swin-mini-uper")):
        backbone_fields = ("model_name", "embed_dim", "depths", "num_heads", "window_size", "drop_path_rate")
        assert [getattr(PRESETS[ocr], f) for f in backbone_fields] == [
            getattr(PRESETS[uper], f) for f in backbone_fields
        ]


def test_mini_uper_backbone_contract_and_config(zoo_registry):
    factory = zoo_registry.catalog.get("backbone", "swin").factory
    report = check_backbone(factory, name="swin", preset="swin-mini-uper")
    assert "strides [4, 8, 16, 32]" in report.checked[0]
    for name, preset in (("swin-l-uper.yaml", "swin-l-uper"), ("swin-mini-uper.yaml", "swin-mini-uper")):
        assert yaml.safe_load((CONFIGS / name).read_text())["model"] == model_config(preset)


@pytest.mark.slow
def test_swin_mini_uper_trains_with_the_5th_place_recipe(zoo_cli, synthetic_vspw, tmp_path):
    """The swin-uper-5th recipe at test size: its optimizer, warm-up and poly decay, OHEM, a global batch of 4."""
    pipeline = {
        "data": {"root": str(synthetic_vspw.root), "split": "val"},
        "model": model_config("swin-mini-uper"),
        "train": {
            "recipe": "swin-uper-5th",
            "max_iters": 40,
            "warmup_iters": 4,
            "lr": 1.0e-3,
            "global_batch": 4,
            "log_every": 5,
            "checkpoint_every": 0,
            "loss": {"type": "ohem-ce", "args": {"thresh": 0.7, "min_kept": 2000}},
            "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}],
        },
        "models": [{"name": "swin-mini-uper", "weights": str(tmp_path / "model")}],
        "output": {"overlays": 0},
        "runtime": {"device": "cpu", "amp": "none", "threads": 1, "progress": False},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    result = zoo_cli("train", "pipeline.yaml", "--out", "model")
    assert result.exit_code == 0, result.output
    assert "global batch 4 images per iteration (batch_size 2 x accum_steps 2 x 1 process)" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert records[-1]["lr"] == pytest.approx(1e-3 / 36)  # poly, power 1: the last step's rate
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-2:]) < 0.95 * np.mean(losses[:2]), losses

    result = zoo_cli("run", "pipeline.yaml", "--out", "run")
    assert result.exit_code == 0, result.output
    miou = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    uniform, majority = synthetic_vspw.chance_miou("val")
    assert miou > 2 * max(uniform, majority), (miou, uniform, majority)
