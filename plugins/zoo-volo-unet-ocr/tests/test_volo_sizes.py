"""The full volo-d5 preset on the meta device: parameter counts against timm and the report's head sizes."""

from __future__ import annotations

import pytest
import timm
import torch
from zoo_volo_unet_ocr import model_config

from zoo_core.model_dir import build_segmentor

NUM_CLASSES = 124
# VOLO-D5 (timm volo_d5_512): stem width 128, stage widths 384 (stride 8) and 768 (stride 16, three stages).
STEM, STAGE0, DEEP = 128, 384, 768
# U-Net widths of the preset; the report's OCR sizes (3.5: pixel representation 1024, middle 512).
FUSE, DECODER, OCR_PIXEL, OCR_MID = 768, (384, 192, 96), 1024, 512


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_bn(cin: int, cout: int, k: int) -> int:
    """A conv without bias + BatchNorm (weight and bias)."""
    return cin * cout * k * k + 2 * cout


@pytest.fixture(scope="module")
def d5(zoo_registry):
    with torch.device("meta"):
        return build_segmentor(model_config("volo-d5", NUM_CLASSES), zoo_registry.catalog)


def test_encoder_is_timm_volo_d5_512_minus_what_features_only_drops(d5):
    with torch.device("meta"):
        full = timm.create_model("volo_d5_512")
    # features_only keeps the stages and the position embedding; it drops the class-attention blocks
    # (post_network), the class token, both classifiers and the final norm.
    dropped = (
        count(full.post_network) + full.cls_token.numel() + count(full.head) + count(full.aux_head) + count(full.norm)
    )
    assert count(d5.backbone.encoder) == count(full) - dropped
    assert d5.backbone.encoder.channels == [STAGE0, DEEP, DEEP, DEEP]
    assert d5.backbone.encoder.strides == [8, 16, 16, 16]


def test_unet_and_heads_match_the_layer_sizes(d5):
    fuse = conv_bn(3 * DEEP, FUSE, 1)  # the last three maps, concatenated
    block8 = conv_bn(FUSE + STAGE0, DECODER[0], 3) + conv_bn(DECODER[0], DECODER[0], 3)  # skip: outlooker stage
    block4 = conv_bn(DECODER[0], DECODER[1], 3) + conv_bn(DECODER[1], DECODER[1], 3)  # no map at stride 4
    block2 = conv_bn(DECODER[1] + STEM, DECODER[2], 3) + conv_bn(DECODER[2], DECODER[2], 3)  # skip: conv stem
    assert count(d5.backbone.neck) == fuse + block8 + block4 + block2

    width = DECODER[2]
    classifier = lambda cin: cin * NUM_CLASSES + NUM_CLASSES
    fcn = conv_bn(width, width, 1) + classifier(width)
    ocr = (
        conv_bn(width, OCR_PIXEL, 3)  # bottleneck to the pixel representation
        + 2 * (conv_bn(OCR_PIXEL, OCR_MID, 1) + conv_bn(OCR_MID, OCR_MID, 1))  # query and key projections
        + conv_bn(OCR_PIXEL, OCR_MID, 1)  # value projection
        + conv_bn(OCR_MID, OCR_PIXEL, 1)  # out projection
        + conv_bn(2 * OCR_PIXEL, OCR_PIXEL, 1)  # fuse context with pixels
        + classifier(OCR_PIXEL)
    )
    assert count(d5.heads[0]) == fcn
    assert count(d5.heads[1]) == ocr
    assert count(d5) == count(d5.backbone.encoder) + count(d5.backbone.neck) + fcn + ocr


def test_d5_recovers_stride_2_on_a_vspw_frame(d5):
    assert d5.backbone.strides == [2, 4, 8, 16] and d5.backbone.channels == [96, 192, 384, 768]
    with torch.no_grad():
        outputs = d5(torch.empty(1, 3, 480, 853, device="meta"))
    assert [tuple(o.shape) for o in outputs] == [(1, NUM_CLASSES, 240, 427)] * 2
    # The report's 512 crops: "from 32x32 to 256x256".
    with torch.no_grad():
        features = d5.backbone(torch.empty(1, 3, 512, 512, device="meta"))
    assert [f.shape[-1] for f in features] == [256, 128, 64, 32]
