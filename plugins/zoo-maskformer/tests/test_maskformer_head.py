"""The maskformer head: its contract, its parts against hand-computed values, and the preset sizes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from zoo_maskformer import PRESETS, model_config
from zoo_maskformer.head import MaskFormerHead, sine_position_encoding

from zoo_core.errors import ConfigError
from zoo_core.model_dir import build_segmentor
from zoo_core.testing import check_head

MINI = PRESETS["maskformer-mini"].head


def test_head_is_registered_and_keeps_the_contract(zoo_registry):
    entry = zoo_registry.catalog.get("head", "maskformer")
    assert entry.distribution == "zoo-maskformer"
    print(check_head(entry.factory, name="maskformer", amp="bf16", **MINI))


def test_sine_position_encoding_by_hand():
    # 2 rows, 1 column, 4 features per axis: dim_t = 10000 ** (2 * (0, 0, 1, 1) / 4) = (1, 1, 100, 100);
    # positions (1, 2) / 2 * 2 pi = (pi, 2 pi) for y, 1 / 1 * 2 pi for x (up to eps 1e-6).
    pos = sine_position_encoding(torch.zeros(1, 3, 2, 1), num_pos_feats=4)
    assert pos.shape == (1, 8, 2, 1)

    def axis(p: float) -> list[float]:
        return [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]

    for row, y in enumerate((math.pi, 2 * math.pi)):
        expected = torch.tensor(axis(y) + axis(2 * math.pi))
        torch.testing.assert_close(pos[0, :, row, 0], expected, atol=1e-5, rtol=0)


def test_aux_holds_each_earlier_layer_through_the_final_norm():
    torch.manual_seed(0)
    args = {**MINI, "dec_layers": 3}
    channels, strides = [8, 16, 24, 32], [4, 8, 16, 32]
    deep = MaskFormerHead(channels, strides, 5, **args).eval()
    features = [torch.randn(1, c, math.ceil(64 / s), math.ceil(96 / s)) for c, s in zip(channels, strides)]
    with torch.no_grad():
        output = deep(features)
        assert output.class_logits.shape == (1, MINI["num_queries"], 6)
        assert output.mask_logits.shape == (1, MINI["num_queries"], 16, 24)
        assert len(output.aux) == 2
        # the same weights truncated to the first two layers: its final output is the deep head's aux[1]
        shallow = MaskFormerHead(channels, strides, 5, **{**args, "dec_layers": 2}).eval()
        missing = shallow.load_state_dict(deep.state_dict(), strict=False)
        assert not missing.missing_keys and all(".decoder_layers.2." in k for k in missing.unexpected_keys)
        truncated = shallow(features)
    torch.testing.assert_close(truncated.class_logits, output.aux[1]["class_logits"])
    torch.testing.assert_close(truncated.mask_logits, output.aux[1]["mask_logits"])
    assert not torch.allclose(output.class_logits, output.aux[1]["class_logits"])


@pytest.mark.parametrize(
    "args, message",
    [
        ({"conv_dim": 48}, "conv_dim must be a multiple of 32"),
        ({"hidden_dim": 30, "nheads": 4}, "hidden_dim 30 must be even and a multiple of nheads 4"),
        ({"dec_layers": 0}, "dec_layers must be a positive integer"),
        ({"in_index": [1, 0]}, "from fine to coarse"),
        ({"transformer_in_index": 4}, "transformer_in_index 4 is out of range"),
    ],
)
def test_bad_sizes_are_refused(args, message):
    with pytest.raises(ConfigError, match=message):
        MaskFormerHead([8, 16, 24, 32], [4, 8, 16, 32], 5, **{**MINI, **args})


def swin_params(embed: int, depths: list[int], heads: list[int], window: int, out_norms: bool) -> int:
    """Parameters of a Swin backbone with four outputs, counted by hand from its layer sizes.

    ``out_norms``: a LayerNorm on each output (MaskFormer's Swin; timm's classification Swin has none).
    """
    total = 3 * 4 * 4 * embed + embed + 2 * embed  # patch embedding conv + LayerNorm
    for stage, (depth, nheads) in enumerate(zip(depths, heads)):
        c = embed * 2**stage
        if stage:  # patch merging: LayerNorm(4c') + Linear(4c' -> c) without bias, c' = c / 2
            total += 2 * 2 * c + 2 * c * c
        block = 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (2 * window - 1) ** 2 * nheads
        block += (4 * c * c + 4 * c) + (4 * c * c + c)  # MLP ratio 4
        total += depth * block
        if out_norms:
            total += 2 * c
    return total


def maskformer_head_params(in_channels: list[int], classes: int, d: int = 256, q: int = 100, ffn: int = 2048) -> int:
    """Parameters of the paper's head (conv/mask/hidden dims d, 6 layers), counted by hand."""
    pixel = sum(c * d + 2 * d for c in in_channels[:-1])  # lateral 1x1 conv + GroupNorm
    pixel += 3 * (9 * d * d + 2 * d) + 9 * in_channels[-1] * d + 2 * d  # output 3x3 convs + GroupNorm
    pixel += 9 * d * d + d  # mask features
    layer = 2 * (4 * d * d + 4 * d) + (d * ffn + ffn) + (ffn * d + d) + 3 * 2 * d
    predictor = q * d + (in_channels[-1] * d + d) + 6 * layer + 2 * d + (d * (classes + 1) + classes + 1)
    predictor += 3 * (d * d + d)  # mask-embedding MLP
    return pixel + predictor


def test_swin_l_sizes_equal_the_official_model():
    with torch.device("meta"):
        model = build_segmentor(model_config("maskformer-swin-l", num_classes=150))
    backbone = sum(p.numel() for p in model.backbone.parameters())
    head = sum(p.numel() for p in model.heads.parameters())
    channels = [192, 384, 768, 1536]
    assert model.backbone.channels == channels and model.backbone.strides == [4, 8, 16, 32]
    assert head == maskformer_head_params(channels, 150) == 16_374_423
    assert backbone == swin_params(192, [2, 2, 18, 2], [6, 12, 24, 48], 12, out_norms=True)
    # 211.58M in all: the paper's 212M (MaskFormer Swin-L, ADE20K, 150 classes)
    assert backbone + head == 211_575_627


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_files_equal_the_presets(preset):
    root = Path(__file__).parents[1]
    assert yaml.safe_load((root / "configs" / f"{preset}.yaml").read_text())["model"] == model_config(preset)
    if preset == "maskformer-mini":
        example = yaml.safe_load((root / "examples" / "train-mini.yaml").read_text())
        assert example["model"] == model_config(preset)
