"""The volo-unet backbone: discovery, shapes at odd sizes, position-embedding resampling, gradients, errors."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed_nhwc
from zoo_volo_unet_ocr import PRESETS, model_config

from zoo_core.errors import ConfigError
from zoo_core.model_dir import build_segmentor
from zoo_core.testing import check_backbone


@pytest.fixture(scope="module")
def catalog(zoo_registry):
    return zoo_registry.catalog  # this distribution's plugins only, loaded strictly: a broken plugin fails the tests


@pytest.fixture(scope="module")
def mini(catalog):
    torch.manual_seed(0)
    return build_segmentor(model_config("volo-mini"), catalog)


def test_volo_unet_is_registered_by_this_distribution(catalog):
    entry = catalog.get("backbone", "volo-unet")
    assert entry.distribution == "zoo-volo-unet-ocr"
    assert "U-Net" in entry.summary


def test_mini_keeps_the_backbone_contract(catalog):
    # Odd input sizes, batches of 1 and 2, eval and train mode, gradients to every parameter, inputs untouched.
    report = check_backbone(catalog.get("backbone", "volo-unet").factory, name="volo-unet", preset="volo-mini")
    assert (report.kind, report.name) == ("backbone", "volo-unet") and report.checked


@pytest.mark.parametrize("size", [(64, 96), (72, 100), (33, 47)])
def test_every_level_has_the_size_of_its_stride(mini, size):
    backbone = mini.backbone
    assert backbone.strides == [2, 4, 8, 16] and backbone.channels == [16, 16, 32, 64]
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, *size))
        outputs = mini.eval()(torch.randn(2, 3, *size))
    for feature, stride, channels in zip(features, backbone.strides, backbone.channels):
        assert feature.shape == (2, channels, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    # Both heads read the stride-2 map.
    assert [o.shape for o in outputs] == [(2, 124, math.ceil(size[0] / 2), math.ceil(size[1] / 2))] * 2


def test_odd_size_is_the_crop_of_the_zero_padded_input(mini):
    images = torch.randn(1, 3, 72, 100)
    padded = torch.nn.functional.pad(images, (0, 12, 0, 8))  # to 80 x 112, multiples of 16
    backbone = mini.backbone.eval()
    with torch.no_grad():
        odd, full = backbone(images), backbone(padded)
    for a, b in zip(odd, full):
        torch.testing.assert_close(a, b[..., : a.shape[-2], : a.shape[-1]])


def test_position_embedding_is_resampled_per_input_and_keeps_its_trained_shape(catalog):
    """The encoder at 64x96 equals timm's VOLO built for 64x96 with the 64x64 embedding resampled into it."""
    torch.manual_seed(1)
    backbone = catalog.build("backbone", "volo-unet", {"preset": "volo-mini"}).eval()
    encoder = backbone.encoder
    pos_name, pos_stride = encoder._fixed_pos_embed
    stored = encoder.model.get_parameter(pos_name)
    assert tuple(stored.shape) == (1, 4, 4, 64) and pos_stride == 16  # img_size 64 / stride 16

    reference = timm.create_model(
        "zoo_volo", features_only=True, out_indices=(0, 1, 2, 3), img_size=(64, 96), **PRESETS["volo-mini"].arch
    ).eval()
    state = dict(encoder.model.state_dict())
    state[pos_name] = resample_abs_pos_embed_nhwc(stored.detach(), [4, 6])
    reference.load_state_dict(state)

    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours, expected = encoder(images), reference(images)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b)
    assert tuple(encoder.model.get_parameter(pos_name).shape) == (1, 4, 4, 64)
    # Not a no-op: the embedding does change the deep maps.
    with torch.no_grad():
        state[pos_name] = state[pos_name] + 1.0
        reference.load_state_dict(state)
        assert not torch.allclose(reference(images)[-1], ours[-1])


def test_gradients_reach_the_neck_the_encoder_stem_and_the_position_embedding(catalog):
    torch.manual_seed(2)
    model = build_segmentor(model_config("volo-mini"), catalog).train()
    outputs = model(torch.randn(2, 3, 64, 96))
    sum(o.square().mean() for o in outputs).backward()
    backbone = model.backbone
    for name, param in backbone.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
    pos_name, _ = backbone.encoder._fixed_pos_embed
    pos = backbone.encoder.model.get_parameter(pos_name)
    assert pos.grad.shape == pos.shape and pos.grad.abs().sum() > 0
    stem_conv = backbone.encoder.get_submodule(backbone.stem_module)[0]
    assert stem_conv.weight.grad.abs().sum() > 0
    for name, param in backbone.neck.named_parameters():
        assert param.grad.abs().sum() > 0, f"neck {name} got a zero gradient"


def test_stem_skip_feeds_the_stride_2_block_and_leaves_no_hook(catalog, mini):
    backbone = mini.backbone
    last = backbone.neck.blocks[-1].convs[0].conv
    assert backbone.neck.block_strides == [8, 4, 2]
    assert last.in_channels == 16 + 16  # the stride-4 level's 16 channels + the stem's 16 (stem_hidden_dim)
    # The stride-8 block takes the outlooker stage (32 channels) next to the fused map (64).
    assert backbone.neck.blocks[0].convs[0].conv.in_channels == 64 + 32
    with torch.no_grad():
        backbone(torch.randn(1, 3, 64, 96))
    assert not backbone.encoder.get_submodule(backbone.stem_module)._forward_hooks
    copied = copy.deepcopy(backbone).eval()
    images = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(copied(images)[0], backbone.eval()(images)[0])

    plain = catalog.build("backbone", "volo-unet", {"preset": "volo-mini", "stem_skip": False})
    assert plain.stem_module is None and plain.neck.blocks[-1].convs[0].conv.in_channels == 16


def test_out_stride_sets_the_levels(catalog):
    backbone = catalog.build("backbone", "volo-unet", {"preset": "volo-mini", "out_stride": 8})
    assert backbone.strides == [8, 16] and backbone.channels == [32, 64]
    assert backbone.stem_module is None  # no stride-2 block: the stem is not captured
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 40, 56))
    assert [tuple(f.shape[-2:]) for f in features] == [(5, 7), (3, 4)]


def test_model_config_has_the_report_head_sizes():
    config = model_config("volo-d5")
    assert config["backbone"] == {"type": "volo-unet", "args": {"preset": "volo-d5"}}
    fcn, ocr = config["heads"]
    assert fcn["type"] == "fcn" and fcn["args"]["loss_weight"] == 0.4 and fcn["args"]["in_index"] == 0
    assert fcn["args"]["channels"] == 96  # the U-Net's stride-2 width, kept (1x1 conv) as mmseg's OCRNet does
    assert ocr["type"] == "ocr" and ocr["args"]["channels"] == 1024 and ocr["args"]["ocr_channels"] == 512


@pytest.mark.parametrize(
    "args, words",
    [
        ({"preset": "volo-d6"}, ["'volo-d6'", "volo-d5", "volo-mini"]),
        ({"preset": "volo-mini", "out_stride": 3}, ["out_stride", "[16, 8, 4, 2, 1]", "3"]),
        ({"preset": "volo-mini", "out_stride": 1}, ["out_stride 1 needs 4 decoder_channels", "[32, 16, 16]"]),
        ({"preset": "volo-mini", "pretrained": True}, ["'volo-mini' has no pretrained weights", "pretrained: false"]),
        ({"preset": "volo-mini", "img_size": 70}, ["img_size", "multiple of 16", "70"]),
        ({"preset": "volo-mini", "drop_path_rate": 1.5}, ["drop_path_rate", "1.5"]),
        ({"preset": "volo-mini", "decoder_channel": [8]}, ["decoder_channel", "decoder_channels", "out_stride"]),
    ],
)
def test_bad_arguments_are_named(catalog, args, words):
    with pytest.raises(ConfigError) as info:
        catalog.build("backbone", "volo-unet", args)
    for word in words:
        assert word in str(info.value)
