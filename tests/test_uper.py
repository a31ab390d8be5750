"""The ``uper`` head: mmsegmentation's UPerHead, checked by its parameter count and by a hand-built forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo_core.components.heads import FCNHead, UPerHead
from zoo_core.errors import ConfigError
from zoo_core.plugins import get_registry
from zoo_core.testing import check_head

SWIN_L = [192, 384, 768, 1536]  # mmseg's upernet_swin Swin-L: decode_head.in_channels
STRIDES = [4, 8, 16, 32]


def conv_module(cin: int, cout: int, k: int) -> int:
    """mmseg's ConvModule with norm_cfg BN (SyncBN): a conv without bias, and the BN's weight and bias."""
    return cin * cout * k * k + 2 * cout


def mmseg_uper_count(in_channels: list[int], channels: int, classes: int, pool_scales=(1, 2, 3, 6)) -> int:
    """The trainable parameters of mmseg's UPerHead, module by module (uper_head.py, psp_head.PPM, decode_head)."""
    psp = len(pool_scales) * conv_module(in_channels[-1], channels, 1)
    bottleneck = conv_module(in_channels[-1] + len(pool_scales) * channels, channels, 3)
    lateral = sum(conv_module(c, channels, 1) for c in in_channels[:-1])
    fpn = (len(in_channels) - 1) * conv_module(channels, channels, 3)
    fpn_bottleneck = conv_module(len(in_channels) * channels, channels, 3)
    conv_seg = channels * classes + classes
    return psp + bottleneck + lateral + fpn + fpn_bottleneck + conv_seg


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("classes", [124, 150])
def test_full_size_parameter_count_equals_mmseg_swin_l_upernet(classes):
    with torch.device("meta"):
        head = UPerHead(SWIN_L, STRIDES, classes, channels=512)
        # mmseg's auxiliary FCNHead: in_index 2, channels 256, num_convs 1, concat_input False
        aux = FCNHead(SWIN_L, STRIDES, classes, in_index=2, channels=256, num_convs=1, concat_input=False)
    assert trainable(head) == mmseg_uper_count(SWIN_L, 512, classes)
    assert trainable(aux) == conv_module(768, 256, 3) + 256 * classes + classes
    # by hand: PPM 4 x 787,456 + bottleneck 16,516,096 + laterals 691,200 + fpn 3 x 2,360,320
    # + fpn_bottleneck 9,438,208 = 36,876,288, plus the classifier 512 x K + K
    assert trainable(head) == {124: 36_939_900, 150: 36_953_238}[classes]


def test_parameter_names_are_mmseg_keys():
    head = UPerHead([8, 16, 24, 32], STRIDES, 5, channels=16)
    names = set(head.state_dict())
    for key in (
        "psp_modules.0.1.conv.weight",
        "psp_modules.3.1.bn.running_mean",
        "bottleneck.conv.weight",
        "lateral_convs.2.conv.weight",
        "fpn_convs.0.bn.weight",
        "fpn_bottleneck.conv.weight",
        "conv_seg.weight",
    ):
        assert key in names, key
    assert "lateral_convs.3.conv.weight" not in names  # the top level goes through the PPM instead


def test_forward_matches_a_hand_written_upernet():
    """The forward pass against the UperNet written out step by step with the head's own modules."""
    torch.manual_seed(0)
    head = UPerHead([4, 6, 8, 10], STRIDES, 3, channels=8, pool_scales=(1, 2)).eval()
    feats = [torch.randn(1, c, 32 // s, 48 // s) for c, s in zip([4, 6, 8, 10], STRIDES)]

    def up(x, like):
        return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)

    top = feats[3]
    pooled = [up(m[1](F.adaptive_avg_pool2d(top, s)), top) for m, s in zip(head.psp_modules, (1, 2))]
    p4 = head.bottleneck(torch.cat([top, *pooled], 1))
    p3 = head.lateral_convs[2](feats[2]) + up(p4, feats[2])
    p2 = head.lateral_convs[1](feats[1]) + up(p3, feats[1])
    p1 = head.lateral_convs[0](feats[0]) + up(p2, feats[0])
    outs = [head.fpn_convs[0](p1), head.fpn_convs[1](p2), head.fpn_convs[2](p3), p4]
    fused = head.fpn_bottleneck(torch.cat([outs[0], *(up(o, outs[0]) for o in outs[1:])], 1))
    expected = head.conv_seg(fused)
    with torch.no_grad():
        got = head(feats)
    assert got.shape == (1, 3, 8, 12) and head.stride == 4
    torch.testing.assert_close(got, expected)


def test_uper_passes_check_head():
    factory = get_registry().catalog.get("head", "uper").factory
    report = check_head(factory, name="uper", channels=16)
    assert any("reaches all" in line for line in report.checked)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"in_index": 3}, "must list two or more feature maps"),
        ({"in_index": [0, 4]}, "in_index 4 is out of range"),
        ({"pool_scales": [1, 0]}, "pool_scales must be positive integers"),
    ],
)
def test_bad_arguments_are_config_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        UPerHead([8, 16, 24, 32], STRIDES, 5, channels=16, **args)


def test_training_on_one_image_says_what_to_do():
    head = UPerHead([8, 16, 24, 32], STRIDES, 5, channels=16).train()
    feats = [torch.randn(1, c, 32 // s, 32 // s) for c, s in zip([8, 16, 24, 32], STRIDES)]
    with pytest.raises(ConfigError, match="set train.batch_size to 2 or more"):
        head(feats)
    assert head.eval()(feats).shape == (1, 5, 8, 8)  # prediction works on one image
