"""TTA with one interpolation per view, batched flips, sliding windows; `predict(images, size)`; size_divisibility."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_core.builtin import zoo_tta_policies
from zoo_core.components.tta import FlipTTA, IdentityTTA, MultiScaleFlipTTA, ResizeFlipTTA, SlideTTA, accepts
from zoo_core.errors import ConfigError
from zoo_core.inference.predictor import ModelRunner
from zoo_core.interfaces import MaskClassification
from zoo_core.model_dir import ModelSpec, build_segmentor
from zoo_core.nn import Segmentor
from zoo_core.plugins import load_registry
from zoo_core.testing import TINY_MODEL, ConformanceError, check_tta


@pytest.fixture(scope="module")
def model() -> Segmentor:
    torch.manual_seed(0)
    model = build_segmentor(TINY_MODEL).eval()
    with torch.no_grad():  # confident predictions (randomly initialised ones are all but uniform)
        model.heads[-1].conv_seg.weight.mul_(3000)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def _probs_at(model: Segmentor, view: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """By hand: the last head's logits interpolated once, straight to `size`, then softmax."""
    logits = model(view)[-1]
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).softmax(1)


# -- predictions unchanged where the math is unchanged ---------------------------------------------


@torch.inference_mode()
def test_identity_and_flip_are_bitwise_what_they_were(model, images):
    runner = ModelRunner("m", model, IdentityTTA(), torch.device("cpu"))
    assert all(accepts(fn, arg) for fn in (runner.predict_once, model.predict) for arg in ("size", "add_to"))
    before = _probs_at(model, images, (64, 96))  # the single-view prediction, unchanged
    assert torch.equal(model.predict(images), before)
    assert torch.equal(model.predict(images, size=(64, 96)), before)
    assert torch.equal(IdentityTTA()(runner.predict_once, images), before)
    mirrored = model.predict(images.flip(-1)).flip(-1)
    flip_before = (before + mirrored) / 2  # what `flip` computed before
    for batch_flips in (False, "auto"):
        assert torch.equal(FlipTTA(batch_flips=batch_flips)(runner.predict_once, images), flip_before)
    assert torch.equal(MultiScaleFlipTTA(scales=[1.0], batch_flips=False)(model.predict, images), flip_before)


@torch.inference_mode()
@pytest.mark.parametrize(
    "policy",
    [
        lambda b: FlipTTA(batch_flips=b),
        lambda b: MultiScaleFlipTTA(scales=(0.5, 1.25), batch_flips=b),
        lambda b: ResizeFlipTTA(size=(40, 56), batch_flips=b),
        lambda b: SlideTTA(crop_size=(64, 64), stride=(32, 32), flip=True, batch_flips=b),  # two windows
    ],
    ids=["flip", "multiscale-flip", "resize-flip", "slide"],
)
def test_batched_flips_equal_sequential_flips(model, images, policy):
    calls: list[int] = []

    def predict(view, size=None):
        calls.append(view.shape[0])
        return model.predict(view, size=size)

    sequential = policy(False)(predict, images)
    assert set(calls) == {2}
    calls.clear()
    batched = policy(True)(predict, images)
    assert set(calls) == {4}  # each flip pair as one batch of 2N
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=0)


# -- one interpolation per view ---------------------------------------------------------------------


@torch.inference_mode()
def test_multiscale_flip_interpolates_each_view_once(model, images):
    frame = (64, 96)
    expected = torch.zeros(2, 124, *frame)
    for scale in (0.5, 1.0, 1.5):
        view = F.interpolate(images, size=(round(64 * scale), round(96 * scale)), mode="bilinear")
        expected += _probs_at(model, view, frame) + _probs_at(model, view.flip(-1), frame).flip(-1)
    expected /= 6
    runner = ModelRunner("m", model, MultiScaleFlipTTA(), torch.device("cpu"))
    torch.testing.assert_close(runner(images), expected, atol=2e-6, rtol=0)
    # the probabilities resized twice (to the view, then to the frame) are measurably different
    twice = F.interpolate(model.predict(view), size=frame, mode="bilinear")
    assert (twice - _probs_at(model, view, frame)).abs().max() > 1e-2


@torch.inference_mode()
def test_predict_adds_into_a_running_sum(model, images):
    view = F.interpolate(images, size=(40, 56), mode="bilinear")
    total = torch.full((2, 124, 64, 96), 0.5)
    result = model.predict(view, size=(64, 96), add_to=total)
    assert result is total
    torch.testing.assert_close(total, 0.5 + _probs_at(model, view, (64, 96)), atol=2e-6, rtol=0)
    total = torch.zeros(2, 124, 64, 96)  # the same view at its own size: the plain softmax of the logits
    model.predict(images, add_to=total)
    torch.testing.assert_close(total, model.predict(images), atol=2e-6, rtol=0)


@torch.inference_mode()
def test_resize_flip_and_plain_predict_functions(model, images):
    view = F.interpolate(images, size=(40, 56), mode="bilinear")
    expected = (_probs_at(model, view, (64, 96)) + _probs_at(model, view.flip(-1), (64, 96)).flip(-1)) / 2
    torch.testing.assert_close(ResizeFlipTTA(size=(40, 56))(model.predict, images), expected, atol=1e-6, rtol=0)
    # a predict function without `size` (an older or fake one) still works: its result is resized here
    plain = lambda x: model.predict(x)  # noqa: E731
    assert not accepts(plain, "size")
    resized = ResizeFlipTTA(size=(40, 56))(plain, images)
    assert resized.shape == (2, 124, 64, 96)
    twice = F.interpolate(model.predict(view), size=(64, 96), mode="bilinear")
    twice = (twice + F.interpolate(model.predict(view.flip(-1)), size=(64, 96), mode="bilinear").flip(-1)) / 2
    torch.testing.assert_close(resized, twice, atol=1e-6, rtol=0)


# -- mask classification and size_divisibility ------------------------------------------------------


class _Features(nn.Module):
    channels, strides = [8], [4]

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, images):
        return [self.conv(images)]


class _MaskHead(nn.Module):
    """Queries from pooled features; masks from a 1x1 conv: a MaskClassification at stride 4."""

    num_classes, loss_weight = 5, 1.0

    def __init__(self, queries: int = 3):
        super().__init__()
        self.cls = nn.Linear(8, queries * 6)
        self.masks = nn.Conv2d(8, queries, 1)
        self.queries = queries

    def forward(self, features, prev_output):
        pooled = features[0].mean((2, 3))
        return MaskClassification(self.cls(pooled).reshape(-1, self.queries, 6), self.masks(features[0]))


class _LogitHead(nn.Module):
    num_classes, loss_weight = 5, 1.0

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 5, 1)

    def forward(self, features, prev_output):
        return self.conv(features[0])


@torch.inference_mode()
def test_mask_classification_predict_upsamples_mask_logits_before_the_sigmoid():
    torch.manual_seed(0)
    segmentor = Segmentor(_Features(), [_MaskHead()]).eval()
    images = torch.randn(2, 3, 32, 48)
    out = segmentor(images)[-1]
    for size in (None, (50, 70)):
        target = (32, 48) if size is None else size
        masks = F.interpolate(out.mask_logits, size=target, mode="bilinear", align_corners=False).sigmoid()
        scores = torch.einsum("nqc,nqhw->nchw", out.class_logits.softmax(-1)[..., :-1], masks)
        torch.testing.assert_close(out.to_scores(target), scores)
        expected = scores / scores.sum(1, keepdim=True)
        probs = segmentor.predict(images, size=size)
        torch.testing.assert_close(probs, expected)
        torch.testing.assert_close(probs.sum(1), torch.ones(2, *target))
    assert out.to_scores().shape == (2, 5, 8, 12)  # without a size: the masks' own resolution, as before


@torch.inference_mode()
def test_size_divisibility_pads_then_crops_as_detectron2():
    torch.manual_seed(0)
    backbone, head = _Features(), _LogitHead()
    padded_model = Segmentor(backbone, [head], size_divisibility=32).eval()
    plain_model = Segmentor(backbone, [head]).eval()
    images = torch.randn(1, 3, 50, 70)
    logits = plain_model(F.pad(images, (0, 96 - 70, 0, 64 - 50)))[-1]  # zero-padded to multiples of 32: 64x96
    full = F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(padded_model.predict(images), full[:, :, :50, :70].softmax(1))
    # another size: the padded equivalent (round(64 * 100 / 50), round(96 * 140 / 70)) = (128, 192), cropped
    full = F.interpolate(logits, size=(128, 192), mode="bilinear", align_corners=False)
    torch.testing.assert_close(padded_model.predict(images, size=(100, 140)), full[:, :, :100, :140].softmax(1))
    assert not torch.allclose(plain_model.predict(images), padded_model.predict(images), atol=1e-3)
    # input already a multiple: nothing padded, the same as without
    images = torch.randn(1, 3, 64, 96)
    assert torch.equal(padded_model.predict(images), plain_model.predict(images))

    masks = Segmentor(_Features(), [_MaskHead()], size_divisibility=32).eval()
    images = torch.randn(1, 3, 50, 70)
    out = masks(F.pad(images, (0, 26, 0, 14)))[-1]
    mask_logits = F.interpolate(out.mask_logits, size=(64, 96), mode="bilinear", align_corners=False)
    scores = MaskClassification(out.class_logits, mask_logits[:, :, :50, :70]).to_scores()
    torch.testing.assert_close(masks.predict(images), scores / scores.sum(1, keepdim=True))


def test_size_divisibility_in_the_model_config():
    spec = ModelSpec.parse({**TINY_MODEL, "size_divisibility": 32})
    assert spec.config()["size_divisibility"] == 32
    assert build_segmentor(spec).size_divisibility == 32
    assert "size_divisibility" not in ModelSpec.parse(TINY_MODEL).config()  # off: config.json as before
    with pytest.raises(ConfigError, match="size_divisibility"):
        ModelSpec.parse({**TINY_MODEL, "size_divisibility": -8})


# -- slide ----------------------------------------------------------------------------------------


def _position_images(height: int, width: int) -> torch.Tensor:
    """Channel 0 the row index, channel 1 the column index: a window knows where it is."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    return torch.stack([rows, cols, torch.zeros(height, width)])[None]


class _WindowPosition:
    """A predict function whose output is, everywhere in the window, its top row, its left column and 1."""

    def __init__(self):
        self.windows: list[tuple[int, int, int, int]] = []

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        top, left = int(window[0, 0].min()), int(window[0, 1].min())
        height, width = window.shape[-2:]
        self.windows.append((top, top + height, left, left + width))
        values = torch.tensor([top, left, 1.0])
        return values[None, :, None, None].expand(1, 3, height, width).clone()


def test_slide_by_hand():
    predict = _WindowPosition()
    out = SlideTTA(crop_size=(3, 4), stride=(2, 2))(predict, _position_images(5, 7))
    # rows: windows [0, 3) and [2, 5); columns: [0, 4), [2, 6) and [3, 7) (the last one moved back to the edge)
    assert predict.windows == [(t, t + 3, left, left + 4) for t in (0, 2) for left in (0, 2, 3)]
    rows = torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0])  # mean top of the windows over each row
    cols = torch.tensor([0.0, 0.0, 1.0, 5 / 3, 2.5, 2.5, 3.0])  # mean left over each column
    torch.testing.assert_close(out[0, 0], rows[:, None].expand(5, 7))
    torch.testing.assert_close(out[0, 1], cols[None, :].expand(5, 7))
    torch.testing.assert_close(out[0, 2], torch.ones(5, 7))  # per-pixel counts normalised

    # a frame smaller than the crop along a side is predicted whole along it, not padded (as mmsegmentation)
    predict = _WindowPosition()
    out = SlideTTA(crop_size=(8, 4), stride=(4, 3), flip=True, batch_flips=False)(predict, _position_images(5, 7))
    assert predict.windows == [(0, 5, 0, 4), (0, 5, 0, 4), (0, 5, 3, 7), (0, 5, 3, 7)]  # each window and mirror
    torch.testing.assert_close(out[0, 1, 0], torch.tensor([0.0, 0.0, 0.0, 1.5, 3.0, 3.0, 3.0]))
    torch.testing.assert_close(out[0, 2], torch.ones(5, 7))


def _mmseg_slide(predict, images, crop, stride):
    """mmsegmentation's slide_inference (mmseg/models/segmentors/encoder_decoder.py), on probabilities."""
    h_stride, w_stride = stride
    h_crop, w_crop = crop
    batch, _, h_img, w_img = images.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds, count_mat = None, images.new_zeros((batch, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop_logit = predict(images[:, :, y1:y2, x1:x2])
            padded = F.pad(crop_logit, (int(x1), int(w_img - x2), int(y1), int(h_img - y2)))
            preds = padded if preds is None else preds + padded
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat


@torch.inference_mode()
@pytest.mark.parametrize("crop, stride", [((24, 32), (16, 20)), ((40, 40), (40, 40)), ((48, 128), (7, 64))])
def test_slide_matches_mmsegmentation(model, crop, stride):
    images = torch.randn(1, 3, 50, 90, generator=torch.Generator().manual_seed(2))
    expected = _mmseg_slide(model.predict, images, crop, stride)
    torch.testing.assert_close(SlideTTA(crop_size=crop, stride=stride)(model.predict, images), expected)


# -- the contract and bad arguments --------------------------------------------------------------


BUILTIN_ARGS = {
    "identity": [{}],
    "flip": [{}, {"batch_flips": True}],
    "multiscale-flip": [{}, {"scales": [0.75, 1.25], "flip": False}, {"batch_flips": True}],
    "resize-flip": [{"size": [24, 40]}, {"size": [24, 40], "batch_flips": "true"}],
    "slide": [{}, {"crop_size": [40, 48], "stride": [24, 30], "flip": True, "batch_flips": True}],
}


def test_check_tta_passes_for_every_builtin_policy():
    catalog = load_registry(autoload=False).catalog
    assert set(BUILTIN_ARGS) == set(zoo_tta_policies())
    for name, variants in BUILTIN_ARGS.items():
        for args in variants:
            report = check_tta(catalog.get("tta", name).factory, name=name, **args)
            assert any("follows the input geometry" in line for line in report.checked), (name, args)


@pytest.mark.parametrize(
    "name, args, argument",
    [
        ("multiscale-flip", {"scales": [0.5, 0]}, "scales"),
        ("multiscale-flip", {"scales": [-1.0]}, "scales"),
        ("multiscale-flip", {"scales": []}, "scales"),
        ("multiscale-flip", {"batch_flips": "sometimes"}, "batch_flips"),
        ("resize-flip", {"size": [0, 40]}, "size"),
        ("slide", {"crop_size": [0, 64]}, "crop_size"),
        ("slide", {"crop_size": -1}, "crop_size"),
        ("slide", {"stride": [0, 8]}, "stride"),
        ("slide", {"crop_size": [64, 64], "stride": [32, 80]}, "stride"),
        ("slide", {"flip": "yes"}, "flip"),
    ],
)
def test_bad_arguments_are_config_errors_naming_the_argument(name, args, argument):
    catalog = load_registry(autoload=False).catalog
    with pytest.raises(ConfigError, match=f"`{argument}`") as raised:
        catalog.build("tta", name, args)
    assert "\n" not in str(raised.value)


def test_check_tta_checks_the_size_and_add_to_a_policy_passes():
    class BothKeywords:  # a third party's policy using the core's predict keywords
        def __call__(self, predict, images):
            size = tuple(images.shape[-2:])
            total = predict(images, size=size)
            predict(F.interpolate(images, scale_factor=0.5, mode="bilinear"), size=size, add_to=total)
            return total / 2

    check_tta(BothKeywords)

    class WrongSum:
        def __call__(self, predict, images):
            total = predict(images)
            return predict(images, size=(3, 3), add_to=total) / 2

    with pytest.raises(ConformanceError, match=r"called predict .* with an add_to of shape \(2, 5, 64, 96\) for a"):
        check_tta(WrongSum)
