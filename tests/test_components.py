"""Built-in components: timm backbone, FCN/OCR heads, CE loss, VSPW remapper, TTA policies, ensemblers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo_core.components.backbones import TimmBackbone
from zoo_core.components.ensemblers import MeanEnsembler, WeightedEnsembler
from zoo_core.components.heads import FCNHead, OCRHead, SpatialGatherModule
from zoo_core.components.losses import CrossEntropyLoss
from zoo_core.components.remappers import VSPWRemapper
from zoo_core.components.tta import FlipTTA, IdentityTTA, MultiScaleFlipTTA, ResizeFlipTTA
from zoo_core.errors import ConfigError, DataError
from zoo_core.interfaces import MaskClassification
from zoo_core.plugins import get_catalog

TINY_SWIN = dict(model_name="swin_tiny_patch4_window7_224", embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))


def _reference_features(backbone: TimmBackbone, images: torch.Tensor, channels_last: bool) -> list[torch.Tensor]:
    """Pad by hand, run the raw timm feature model, crop by hand."""
    h, w = images.shape[-2:]
    multiple = max(backbone.strides)
    padded = torch.zeros(*images.shape[:2], math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple)
    padded[..., :h, :w] = images
    raw = backbone.model(padded)
    if channels_last:
        raw = [f.permute(0, 3, 1, 2) for f in raw]
    return [f[..., : math.ceil(h / s), : math.ceil(w / s)] for f, s in zip(raw, backbone.strides)]


@torch.no_grad()
def test_swin_backbone_non_square_nhwc_to_nchw():
    torch.manual_seed(0)
    backbone = TimmBackbone(**TINY_SWIN).eval()
    assert backbone.channels == [32, 64, 128, 256]
    assert backbone.strides == [4, 8, 16, 32]
    assert backbone.channels_last_output
    features = backbone(torch.randn(1, 3, 480, 853))
    expected_sizes = [(120, 214), (60, 107), (30, 54), (15, 27)]
    assert [tuple(f.shape) for f in features] == [(1, c, h, w) for c, (h, w) in zip(backbone.channels, expected_sizes)]
    images = torch.randn(1, 3, 70, 101)
    for got, want in zip(backbone(images), _reference_features(backbone, images, channels_last=True)):
        torch.testing.assert_close(got, want)


@torch.no_grad()
def test_resnet_backbone_non_square():
    backbone = TimmBackbone("resnet18", out_indices=(1, 2, 3, 4)).eval()
    assert backbone.channels == [64, 128, 256, 512]
    assert backbone.strides == [4, 8, 16, 32]
    assert not backbone.channels_last_output
    features = backbone(torch.randn(1, 3, 480, 853))
    assert [tuple(f.shape[2:]) for f in features] == [(120, 214), (60, 107), (30, 54), (15, 27)]
    images = torch.randn(1, 3, 70, 101)
    for got, want in zip(backbone(images), _reference_features(backbone, images, channels_last=False)):
        torch.testing.assert_close(got, want)


@torch.no_grad()
def test_volo_fixed_position_embedding_follows_input_size():
    backbone = TimmBackbone("volo_d1_224", out_indices=(0, 3), img_size=(64, 96)).eval()
    assert backbone.strides == [8, 16]
    assert backbone._fixed_pos_embed == ("model.pos_embed", 16)
    trained = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[2:]) for f in trained] == [(8, 12), (4, 6)]
    features = backbone(torch.randn(1, 3, 70, 130))  # padded to 80x144: a 5x9 embedding grid
    assert [tuple(f.shape[2:]) for f in features] == [(9, 17), (5, 9)]
    assert tuple(backbone.model.model.pos_embed.shape) == (1, 4, 6, 384)  # the stored weights keep their size


def test_pretrained_failure_is_a_config_error(monkeypatch):
    import timm

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("cannot reach the Hub")
        raise AssertionError("only the pretrained path is exercised")

    monkeypatch.setattr(timm, "create_model", offline)
    expected = r"pretrained weights for resnet18 could not be loaded: .*Hub.*pretrained: false"
    with pytest.raises(ConfigError, match=expected):
        TimmBackbone("resnet18", pretrained=True)


def test_unknown_timm_model():
    with pytest.raises(ConfigError, match="unknown model_name 'no_such_net'"):
        TimmBackbone("no_such_net")


FEATURE_CHANNELS = [4, 5, 6]
FEATURE_STRIDES = [8, 16, 32]


def _features(n: int = 2) -> list[torch.Tensor]:
    return [torch.randn(n, 4, 8, 12), torch.randn(n, 5, 4, 6), torch.randn(n, 6, 2, 3)]


def test_resize_concat_selects_and_resizes():
    head = FCNHead(
        FEATURE_CHANNELS, FEATURE_STRIDES, 3, channels=8, in_index=[0, 1, 2], input_transform="resize_concat"
    )
    assert head.in_channels == 15 and head.stride == 8
    features = _features()
    x = head.transform_inputs(features)
    assert x.shape == (2, 15, 8, 12)
    torch.testing.assert_close(x[:, 4:9], F.interpolate(features[1], size=(8, 12), mode="bilinear"))
    assert head(features, None).shape == (2, 3, 8, 12)


def test_fcn_single_input_and_config_errors():
    head = FCNHead(FEATURE_CHANNELS, FEATURE_STRIDES, 3, channels=8, in_index=-1)
    assert head.in_channels == 6 and head.stride == 32
    assert head(_features(), None).shape == (2, 3, 2, 3)
    with pytest.raises(ConfigError, match="resize_concat"):
        FCNHead(FEATURE_CHANNELS, FEATURE_STRIDES, 3, in_index=[1, 2])
    with pytest.raises(ConfigError, match="out of range"):
        FCNHead(FEATURE_CHANNELS, FEATURE_STRIDES, 3, in_index=3)


def test_spatial_gather_is_softmax_weighted_average():
    feats = torch.tensor([1.0, 3.0, 5.0, 7.0]).reshape(1, 1, 2, 2)
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e4, -1e4]]).reshape(1, 2, 2, 2)
    context = SpatialGatherModule()(feats, logits)
    assert context.shape == (1, 1, 2, 1)
    # region 0: uniform over 4 pixels; region 1: weights 1/4, 3/4 on the first two pixels.
    torch.testing.assert_close(context.flatten(), torch.tensor([4.0, 0.25 * 1 + 0.75 * 3]))


def test_ocr_needs_prev_output_and_resizes_it():
    ocr = OCRHead(FEATURE_CHANNELS, FEATURE_STRIDES, 3, channels=8, ocr_channels=4, in_index=0)
    features = _features()
    with pytest.raises(ConfigError, match="fcn head before it"):
        ocr(features, None)
    coarse = torch.randn(2, 3, 2, 3)
    assert ocr(features, coarse).shape == (2, 3, 8, 12)
    ocr.eval()
    with torch.no_grad():
        direct = ocr(features, coarse)
        resized = ocr(features, F.interpolate(coarse, size=(8, 12), mode="bilinear"))
    torch.testing.assert_close(direct, resized)


def test_ocr_scale_downsamples_query():
    ocr = OCRHead(FEATURE_CHANNELS, FEATURE_STRIDES, 3, channels=8, ocr_channels=4, in_index=0, scale=2)
    assert ocr(_features(), torch.randn(2, 3, 8, 12)).shape == (2, 3, 8, 12)


def test_heads_are_in_the_catalog_with_injected_arguments():
    head = get_catalog().build(
        "head",
        "ocr",
        {"channels": 8, "ocr_channels": 4, "in_index": 1},
        in_channels=FEATURE_CHANNELS,
        in_strides=FEATURE_STRIDES,
        num_classes=5,
    )
    assert isinstance(head, OCRHead) and head.num_classes == 5 and head.in_channels == 5


# --- loss -------------------------------------------------------------------------------------


def test_ce_hand_case_with_ignore():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[2, 255]]])
    # Only pixel 0 counts: -log softmax([1, 2, 0.5])[2].
    expected = -(0.5 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)))
    loss = CrossEntropyLoss()(logits, target, None)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, ignore_index=255))


def test_ce_upsamples_weights_and_scales():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, 6)
    target = torch.randint(0, 4, (2, 8, 12))
    target[0, :3] = 255
    weights = [1.0, 2.0, 0.5, 3.0]
    loss = CrossEntropyLoss(class_weight=weights, loss_weight=0.4)(logits, target, None)
    up = F.interpolate(logits, size=(8, 12), mode="bilinear", align_corners=False)
    log_probs = up.log_softmax(1)
    valid = target != 255
    picked = log_probs.gather(1, target.clamp(max=3).unsqueeze(1)).squeeze(1)[valid]
    w = torch.tensor(weights)[target[valid]]
    torch.testing.assert_close(loss, 0.4 * -(w * picked).sum() / w.sum())


def test_ce_all_ignored_is_zero_with_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = CrossEntropyLoss()(logits, torch.full((1, 2, 2), 255), None)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_ce_mask_classification_and_bad_targets():
    class_logits = torch.randn(1, 5, 4)  # 5 queries, 3 classes + no-object
    mask_logits = torch.randn(1, 5, 2, 2)
    output = MaskClassification(class_logits, mask_logits)
    target = torch.tensor([[[0, 1], [2, 255]]])
    scores = output.to_scores()
    probs = scores / scores.sum(1, keepdim=True)
    expected = -probs.log().gather(1, target.clamp(max=2).unsqueeze(1)).squeeze(1)[target != 255].mean()
    torch.testing.assert_close(CrossEntropyLoss()(output, target, None), expected)
    with pytest.raises(DataError, match="outside 0..2"):
        CrossEntropyLoss()(torch.randn(1, 3, 2, 2), torch.tensor([[[0, 7], [1, 1]]]), None)


# --- remapper ---------------------------------------------------------------------------------


def test_vspw_remapper_lut_and_filter():
    remap = VSPWRemapper(min_labelled=0.75)
    raw = np.array([[0, 1, 2, 124], [125, 200, 255, 60]], dtype=np.uint8)
    expected = np.array([[255, 0, 1, 123], [255, 255, 255, 59]], dtype=np.uint8)
    out = remap(raw)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    assert torch.equal(remap(torch.from_numpy(raw)), torch.from_numpy(expected))
    assert remap.lut.shape == (256,) and remap.lut.dtype == np.uint8
    assert not remap.keep(out)  # 4 of 8 labelled
    assert remap.keep(remap(np.array([1, 2, 3, 0], dtype=np.uint8)))  # 3 of 4
    assert len(remap.source_classes) == 125
    assert remap.source_classes[:2] == ["others", "wall"] and remap.source_classes[124] == "train"
    with pytest.raises(DataError, match="0..255"):
        remap(np.array([[1, 300]], dtype=np.int32))


# --- TTA --------------------------------------------------------------------------------------


def _ramp_predict(images: torch.Tensor) -> torch.Tensor:
    """Channel 0 follows the image (flip-equivariant); channel 1 is the column index (not equivariant)."""
    n, _, h, w = images.shape
    columns = torch.arange(w, dtype=torch.float32).expand(n, 1, h, w)
    return torch.cat([images[:, :1], columns], dim=1)


def test_flip_tta_flips_back():
    images = torch.randn(2, 3, 4, 5)
    probs = FlipTTA()(_ramp_predict, images)
    torch.testing.assert_close(probs[:, 0], images[:, 0])
    # The column ramp and its flipped-back mirror average to the middle column everywhere.
    torch.testing.assert_close(probs[:, 1], torch.full((2, 4, 5), 2.0))
    torch.testing.assert_close(IdentityTTA()(_ramp_predict, images), _ramp_predict(images))


def test_flip_tta_of_equivariant_model_is_the_model():
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(3, 4, 1)
    predict = lambda x: pointwise(x).softmax(1)  # noqa: E731
    images = torch.randn(1, 3, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(FlipTTA()(predict, images), predict(images))


class SizeRecorder:
    """A predict fn whose output is the view's height everywhere; records the view sizes."""

    def __init__(self):
        self.sizes = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        self.sizes.append((h, w))
        return torch.full((n, 2, h, w), float(h))


def test_multiscale_flip_averages_at_input_size():
    predict = SizeRecorder()
    probs = MultiScaleFlipTTA(scales=(0.5, 1.0, 1.5), flip=True)(predict, torch.randn(1, 3, 64, 96))
    assert predict.sizes == [(32, 48), (32, 48), (64, 96), (64, 96), (96, 144), (96, 144)]
    assert probs.shape == (1, 2, 64, 96)
    torch.testing.assert_close(probs, torch.full((1, 2, 64, 96), (32 + 64 + 96) / 3))
    predict = SizeRecorder()
    probs = MultiScaleFlipTTA(scales=(0.5, 1.0), flip=False)(predict, torch.randn(1, 3, 64, 96))
    assert predict.sizes == [(32, 48), (64, 96)]
    torch.testing.assert_close(probs, torch.full((1, 2, 64, 96), 48.0))


def test_resize_flip_predicts_at_crop_size():
    predict = SizeRecorder()
    probs = ResizeFlipTTA(size=(40, 60))(predict, torch.randn(1, 3, 64, 96))
    assert predict.sizes == [(40, 60), (40, 60)]
    torch.testing.assert_close(probs, torch.full((1, 2, 64, 96), 40.0))
    with pytest.raises(ConfigError, match="size"):
        ResizeFlipTTA(size=(40,))


# --- ensemblers -------------------------------------------------------------------------------


def test_weighted_gamma_formula_by_hand():
    swin = torch.tensor([0.2, 0.8]).reshape(1, 2, 1, 1)
    volo = torch.tensor([0.9, 0.1]).reshape(1, 2, 1, 1)
    out = WeightedEnsembler(gamma=0.56)({"swin": swin, "volo": volo})
    assert out.dtype == torch.float64  # the fusion of linear ensemblers (zoo_core.ensemble.fuse)
    expected = torch.tensor([0.56 * 0.2 + 0.44 * 0.9, 0.56 * 0.8 + 0.44 * 0.1], dtype=torch.float64)
    torch.testing.assert_close(out.flatten(), expected, rtol=1e-7, atol=1e-7)
    assert out.flatten().argmax() == 0  # 0.508 vs 0.492: the weaker model's confidence tips it
    with pytest.raises(ConfigError, match="exactly two models"):
        WeightedEnsembler(gamma=0.5)({"a": swin, "b": swin, "c": swin})


def test_weighted_by_name_and_list_and_mean():
    a = torch.full((1, 2, 2, 2), 1.0)
    b = torch.full((1, 2, 2, 2), 3.0)
    torch.testing.assert_close(
        WeightedEnsembler(weights={"b": 0.5, "a": 2.0})({"a": a, "b": b}), torch.full((1, 2, 2, 2), 3.5).double()
    )
    torch.testing.assert_close(
        WeightedEnsembler(weights=[0.25, 1.0])({"a": a, "b": b}), torch.full((1, 2, 2, 2), 3.25).double()
    )
    torch.testing.assert_close(MeanEnsembler()({"a": a, "b": b}), torch.full((1, 2, 2, 2), 2.0))
    with pytest.raises(ConfigError, match="unknown model name.*swim.*no weight for b"):
        WeightedEnsembler(weights={"a": 1.0, "swim": 1.0})({"a": a, "b": b})
    with pytest.raises(ConfigError, match="2 weights for 3 models"):
        WeightedEnsembler(weights=[1.0, 1.0])({"a": a, "b": b, "c": b})
    with pytest.raises(ConfigError, match="exactly one of"):
        get_catalog().build("ensembler", "weighted", {"gamma": 0.5, "weights": [1, 1]})
