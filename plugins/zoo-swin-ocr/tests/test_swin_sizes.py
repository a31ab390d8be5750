"""The full-size presets, built on the meta device: timm's Swin-L plus the report's head sizes (3.5)."""

from __future__ import annotations

import pytest
import torch
from zoo_swin_ocr import model_config

from zoo_core.model_dir import build_segmentor


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_bn(c_in: int, c_out: int, k: int = 1) -> int:
    """mmseg's ConvModule: a conv without bias, then BN (weight and bias)."""
    return c_in * c_out * k * k + 2 * c_out


@pytest.mark.parametrize("preset, depths", [("swin-l", (2, 2, 18, 2)), ("swin-l-deep", (4, 6, 20, 4))])
def test_full_size_preset_parameters(preset, depths):
    import timm

    with torch.device("meta"):
        model = build_segmentor(model_config(preset))
        reference = timm.create_model("swin_large_patch4_window12_384", depths=depths)
    backbone, (fcn, ocr) = model.backbone, model.heads
    assert backbone.depths == depths
    assert backbone.channels == [384, 768, 1536] and backbone.strides == [8, 16, 32]
    assert fcn.in_channels == ocr.in_channels == 384 + 768 + 1536 == 2688
    assert (fcn.loss_weight, ocr.loss_weight) == (0.4, 1.0)

    # features_only keeps every stage (stage 0 feeds the others) and drops exactly the final norm and the classifier.
    ours = {name.removeprefix("model."): p.shape for name, p in backbone.named_parameters()}
    theirs = {name.replace("layers.", "layers_", 1): p.shape for name, p in reference.named_parameters()}
    assert set(theirs) - set(ours) == {"norm.weight", "norm.bias", "head.fc.weight", "head.fc.bias"}
    assert ours == {k: v for k, v in theirs.items() if not k.startswith(("norm.", "head."))}
    dropped = 2 * 1536 + (1536 * 1000 + 1000)
    assert count(backbone) == count(reference) - dropped

    # Heads, from the layer sizes: 2688 in, FCN keeps 2688 (1x1), OCR 1024 pixels / 512 middle, 124 classes.
    classes, c_in, pixels, mid = 124, 2688, 1024, 512
    classifier = lambda c: c * classes + classes
    assert count(fcn) == conv_bn(c_in, c_in) + classifier(c_in)
    attention = (conv_bn(pixels, mid) + conv_bn(mid, mid)) * 2 + conv_bn(pixels, mid) + conv_bn(mid, pixels)
    assert count(ocr.object_context_block) == attention + conv_bn(2 * pixels, pixels)
    assert count(ocr) == conv_bn(c_in, pixels, 3) + attention + conv_bn(2 * pixels, pixels) + classifier(pixels)
    assert count(model) == count(backbone) + count(fcn) + count(ocr)
