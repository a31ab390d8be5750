"""The ``swin`` backbone and its presets, through discovery as a user gets them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from zoo_swin_ocr import PRESETS, model_config

from zoo_core.errors import ConfigError
from zoo_core.testing import check_backbone

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # this distribution's own folder


@pytest.fixture(scope="module")
def catalog(zoo_registry):
    return zoo_registry.catalog  # this distribution's plugins only, loaded strictly: a broken plugin fails the tests


def test_registered_with_its_command(catalog, zoo_cli):
    entry = catalog.get("backbone", "swin")
    assert (entry.distribution, entry.version) == ("zoo-swin-ocr", "0.1.0")
    result = zoo_cli("deepen", "--help")
    assert result.exit_code == 0, result.output
    assert "Add Swin blocks to a trained model" in result.stdout


def test_mini_keeps_the_backbone_contract(catalog):
    # Odd input sizes, batches of 1 and 2, eval and train mode, gradients to every parameter, inputs untouched.
    report = check_backbone(catalog.get("backbone", "swin").factory, name="swin", preset="swin-mini")
    assert (report.kind, report.name) == ("backbone", "swin") and report.checked


@pytest.mark.parametrize("size", [(64, 96), (50, 70)])
def test_mini_maps_at_strides_8_16_32_of_any_input(catalog, size):
    backbone = catalog.build("backbone", "swin", {"preset": "swin-mini"}).eval()
    assert backbone.channels == [64, 128, 256] and backbone.strides == [8, 16, 32]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, *size))
    assert [tuple(m.shape) for m in maps] == [
        (1, c, math.ceil(size[0] / s), math.ceil(size[1] / s)) for c, s in zip([64, 128, 256], [8, 16, 32])
    ]


def test_presets_have_the_report_architecture(catalog):
    with torch.device("meta"):
        large = catalog.build("backbone", "swin", {"preset": "swin-l"})
        deep = catalog.build("backbone", "swin", {"preset": "swin-l-deep"})
    stages = [getattr(large.model, f"layers_{i}") for i in range(4)]
    assert [len(s.blocks) for s in stages] == [2, 2, 18, 2] and large.depths == (2, 2, 18, 2)
    assert [len(getattr(deep.model, f"layers_{i}").blocks) for i in range(4)] == [4, 6, 20, 4]
    assert large.model.patch_embed.proj.out_channels == 192
    assert [s.blocks[0].attn.num_heads for s in stages] == [6, 12, 24, 48]
    # Every odd block shifts its 12x12 windows by 6, the last stage too (mmseg's Swin); timm alone would
    # not shift there, since that stage's map at the 384 pretraining size is a single window.
    for stage in stages:
        assert [b.window_size for b in stage.blocks] == [(12, 12)] * len(stage.blocks)
        assert [b.shift_size for b in stage.blocks] == [(0, 0), (6, 6)] * (len(stage.blocks) // 2)


def test_overrides_and_their_errors(catalog):
    backbone = catalog.build("backbone", "swin", {"preset": "swin-mini", "depths": [2, 2, 4, 2], "window_size": 2})
    assert backbone.depths == (2, 2, 4, 2) and len(backbone.model.layers_2.blocks) == 4
    assert backbone.model.layers_1.blocks[1].shift_size == (1, 1)
    with pytest.raises(ConfigError, match="unknown preset 'swin-xl'; choose one of swin-l, swin-l-deep, swin-mini"):
        catalog.build("backbone", "swin", {"preset": "swin-xl"})
    with pytest.raises(ConfigError, match=r"depths must be four positive integers .* got \[2, 2, 18\]"):
        catalog.build("backbone", "swin", {"preset": "swin-mini", "depths": [2, 2, 18]})
    with pytest.raises(ConfigError, match="window_size must be a positive integer, got 0"):
        catalog.build("backbone", "swin", {"preset": "swin-mini", "window_size": 0})
    with pytest.raises(ConfigError, match=r"drop_path_rate must be in \[0, 1\), got 1.5"):
        catalog.build("backbone", "swin", {"preset": "swin-mini", "drop_path_rate": 1.5})


@pytest.mark.parametrize(
    "args", [{"preset": "swin-l-deep"}, {"preset": "swin-l", "depths": [2, 2, 20, 2]}, {"preset": "swin-mini"}]
)
def test_pretrained_only_for_the_architecture_of_the_weights(catalog, args):
    # Refused before timm is asked for anything: no download is attempted.
    with pytest.raises(ConfigError, match="ImageNet weights exist for swin-l's own architecture only.*zoo deepen"):
        catalog.build("backbone", "swin", {**args, "pretrained": True})


def test_model_config_sizes():
    large = model_config("swin-l")
    assert large["num_classes"] == 124 and large["backbone"] == {"type": "swin", "args": {"preset": "swin-l"}}
    fcn, ocr = (h["args"] for h in large["heads"])
    assert [h["type"] for h in large["heads"]] == ["fcn", "ocr"]
    assert fcn["channels"] == 384 + 768 + 1536 and fcn["loss_weight"] == 0.4
    assert (ocr["channels"], ocr["ocr_channels"]) == (1024, 512)
    assert fcn["in_index"] == ocr["in_index"] == [0, 1, 2]
    assert model_config("swin-mini", num_classes=5)["heads"][0]["args"]["channels"] == 64 + 128 + 256
    with pytest.raises(ConfigError, match="unknown preset"):
        model_config("swin-b")


@pytest.mark.parametrize("name, preset", [("swin-l-ocr.yaml", "swin-l"), ("swin-mini-ocr.yaml", "swin-mini")])
def test_shipped_configs_equal_model_config(name, preset):
    assert yaml.safe_load((CONFIGS / name).read_text())["model"] == model_config(preset)


def test_deep_presets_only_add_blocks():
    for name in ("swin-l", "swin-mini"):
        base, deep = PRESETS[name], PRESETS[f"{name}-deep"]
        assert [b - a for a, b in zip(base.depths, deep.depths)] == [2, 4, 2, 2]
        assert {k: v for k, v in vars(base).items() if k not in ("depths", "summary", "pretrainable")} == {
            k: v for k, v in vars(deep).items() if k not in ("depths", "summary", "pretrainable")
        }
