"""zoo_core.testing's conformance checks: every built-in passes, and a component broken in one way is caught,
with the reason in words.

Each kind has a small correct component here (it passes, so a failure of a variant is due to its one change)
and variants of it that each break one rule of the contract.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_core.errors import ConfigError, DataError, ZooError
from zoo_core.evaluation.confusion import write_confusion
from zoo_core.plugins import load_registry
from zoo_core.testing import (
    CheckReport,
    ConformanceError,
    check_backbone,
    check_ensembler,
    check_head,
    check_loss,
    check_remapper,
    check_tta,
)


@pytest.fixture(scope="module")
def catalog():
    return load_registry(autoload=False).catalog


def test_conformance_error_is_an_assertion_not_a_user_error():
    assert issubclass(ConformanceError, AssertionError)
    assert not issubclass(ConformanceError, ZooError)


def test_importing_zoo_core_testing_does_not_import_torch():
    # pytest loads the package's plugin in every session: it must stay light until a check is used.
    code = "import sys, zoo_core.testing; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- the built-ins pass ---------------------------------------------------------------


def test_timm_backbone_passes(catalog):
    report = check_backbone(
        catalog.get("backbone", "timm").factory, name="timm", model_name="resnet10t", out_indices=[1, 2, 3]
    )
    assert isinstance(report, CheckReport) and (report.kind, report.name) == ("backbone", "timm")
    assert "channels [64, 128, 256] and strides [4, 8, 16]" in report.checked[0]
    assert any("reaches all" in line for line in report.checked)


@pytest.mark.parametrize(
    "name, args",
    [
        ("fcn", {"channels": 16}),
        ("fcn", {"channels": 16, "in_index": [0, 1, 2, 3], "input_transform": "resize_concat", "num_convs": 1}),
        ("ocr", {"channels": 16, "ocr_channels": 8, "in_index": 1}),
    ],
)
def test_builtin_heads_pass(catalog, name, args):
    report = check_head(catalog.get("head", name).factory, name=name, **args)
    # ocr needs the fcn logits before it: it refuses prev_output None with a ZooError, and that is allowed.
    refuses_none = any("prev_output None is refused" in line for line in report.checked)
    assert refuses_none == (name == "ocr")


@pytest.fixture
def confusion_file(tmp_path):
    path = tmp_path / "confusion.json"
    write_confusion(
        path,
        np.array([[9, 1, 0, 0, 0], [2, 7, 1, 0, 0], [0, 0, 5, 0, 3], [0, 1, 0, 8, 0], [0, 0, 2, 0, 6]]),
        [f"c{i}" for i in range(5)],
    )
    return path


@pytest.mark.parametrize("mask_classification", [False, True])
@pytest.mark.parametrize(
    "name, args",
    [
        ("ce", {}),
        ("ce", {"class_weight": [1.0, 2.0, 0.5, 1.0, 3.0]}),
        ("ohem-ce", {}),
        ("ohem-ce", {"thresh": 0.5, "min_kept": 100}),
        ("pixel-distribution", {"class_weight": [1.0, 2.0, 0.5, 1.0, 3.0]}),
        ("confusion-focal", {}),
    ],
)
def test_builtin_losses_pass(catalog, confusion_file, name, args, mask_classification):
    if name == "confusion-focal":
        args = {"confusion": str(confusion_file)}
    report = check_loss(catalog.get("loss", name).factory, name=name, mask_classification=mask_classification, **args)
    ignore_checked = any("pixels labelled 255 are ignored" in line for line in report.checked)
    assert ignore_checked == (not mask_classification)
    assert any("refused with a ZooError" in line for line in report.checked)


@pytest.mark.parametrize("name", ["vspw", "coco-stuff", "ade20k", "cityscapes"])
def test_builtin_remappers_pass(catalog, name):
    report = check_remapper(catalog.get("remapper", name).factory, name=name)
    assert "lut: 256 uint8 values, train ids 0..123 or 255" in report.checked


@pytest.mark.parametrize(
    "name, args",
    [
        ("identity", {}),
        ("flip", {}),
        ("multiscale-flip", {}),
        ("multiscale-flip", {"scales": [0.75, 1.25], "flip": False}),
        ("resize-flip", {"size": [24, 40]}),
    ],
)
def test_builtin_tta_policies_pass(catalog, name, args):
    report = check_tta(catalog.get("tta", name).factory, name=name, **args)
    assert any("follows the input geometry" in line for line in report.checked)


@pytest.mark.parametrize(
    "name, args",
    [
        ("mean", {}),
        ("weighted", {"gamma": 0.56}),
        ("weighted", {"weights": [0.2, 0.5, 0.3], "model_names": ["swin", "volo", "beit"]}),
        ("weighted", {"weights": {"swin": 0.6, "volo": 0.4}, "model_names": ["swin", "volo"]}),
    ],
)
def test_builtin_ensemblers_pass(catalog, name, args):
    report = check_ensembler(catalog.get("ensembler", name).factory, name=name, **args)
    assert any("per frame" in line for line in report.checked)


def test_the_hookspec_example_ensembler_passes():
    # zoo_ensemblers' docstring: the max over the models, with no argument checks at all.
    report = check_ensembler(lambda: lambda per_model: torch.stack(list(per_model.values())).amax(0), name="max")
    assert report.name == "max"


# -- backbones ------------------------------------------------------------------------


class TinyBackbone(nn.Module):
    """Two maps at strides 4 and 8; pads to a multiple of 8 and crops back. Each flag breaks one rule."""

    def __init__(self, pad=True, normalise_in_place=False, unused_layer=False, refuse_odd=False, channels=(8, 16)):
        super().__init__()
        self.channels, self.strides = list(channels), [4, 8]
        self.pad, self.normalise_in_place, self.refuse_odd = pad, normalise_in_place, refuse_odd
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.down = nn.Conv2d(8, 16, 2, stride=2)
        self.unused = nn.Linear(4, 4) if unused_layer else None

    def forward(self, images):
        height, width = images.shape[-2:]
        if self.refuse_odd and (height % 8 or width % 8):
            raise ValueError("input size must be a multiple of 8")
        if self.normalise_in_place:
            images.sub_(0.5)
        if self.pad:
            images = F.pad(images, (0, -width % 8, 0, -height % 8))
        x = self.stem(images)
        y = self.down(x)
        if self.pad:
            x, y = x[..., : -(-height // 4), : -(-width // 4)], y[..., : -(-height // 8), : -(-width // 8)]
        return [x, y]


def test_tiny_backbone_passes():
    assert check_backbone(TinyBackbone).kind == "backbone"


def test_backbone_without_padding_is_caught_with_the_expected_size():
    with pytest.raises(ConformanceError) as caught:
        check_backbone(TinyBackbone, name="no-pad", pad=False)
    # floor(50/4) x floor(77/4) = 12 x 19 where ceil gives 13 x 20.
    assert (
        "backbone 'no-pad': output 0 has shape (1, 8, 12, 19), expected (1, 8, 13, 20) = ceil(50/4) x "
        "ceil(77/4) for input 50x77"
    ) in str(caught.value)


def test_backbone_channels_not_matching_its_maps_are_caught():
    with pytest.raises(ConformanceError, match=r"output 1 has shape \(2, 16, 8, 12\), expected \(2, 32, 8, 12\)"):
        check_backbone(TinyBackbone, channels=(8, 32))


def test_backbone_modifying_its_input_in_place_is_caught():
    with pytest.raises(ConformanceError, match=r"modified its `images` in place \(images \(2, 3, 64, 96\) in eval"):
        check_backbone(TinyBackbone, normalise_in_place=True)


def test_backbone_with_an_unused_parameter_is_caught():
    with pytest.raises(
        ConformanceError,
        match=r"no gradient reached 2 of its 6 trainable parameters .*unused.weight, "
        r"unused.bias; an unused parameter breaks distributed training",
    ):
        check_backbone(TinyBackbone, unused_layer=True)


def test_backbone_refusing_odd_sizes_is_caught_naming_the_exception():
    with pytest.raises(
        ConformanceError,
        match=r"raised ValueError: input size must be a multiple of 8 on valid "
        r"input \(images \(1, 3, 50, 77\) in eval mode\)",
    ):
        check_backbone(TinyBackbone, refuse_odd=True)


def test_backbone_under_autocast():
    report = check_backbone(TinyBackbone, amp="bf16")
    assert report.checked[-1] == "autocast bf16: same shapes, finite"

    class Float64(TinyBackbone):
        def forward(self, images):
            return [x.double() for x in super().forward(images)]

    with pytest.raises(
        ConformanceError,
        match=r"output 0 is torch.float64 for float32 images \(2, 3, 64, 96\) in "
        r"eval mode; return float32 outside autocast",
    ):
        check_backbone(Float64)


def test_backbone_attributes_are_checked():
    def without_strides():
        model = TinyBackbone()
        del model.strides
        return model

    with pytest.raises(ConformanceError, match="has no attribute `strides`"):
        check_backbone(without_strides)
    with pytest.raises(ConformanceError, match=r"has 3 channels \[8, 16, 16\] but 2 strides \[4, 8\]"):
        check_backbone(TinyBackbone, channels=(8, 16, 16))
    with pytest.raises(ConformanceError, match="the factory returned a function, not a torch.nn.Module"):
        check_backbone(lambda: lambda images: [images])


# -- heads ----------------------------------------------------------------------------


class TinyHead(nn.Module):
    """A 1x1 classifier on the last map. Each flag breaks one rule."""

    def __init__(
        self,
        in_channels,
        in_strides,
        num_classes,
        extra_class=False,
        relu_in_place=False,
        detach=False,
        none_error=None,
        claimed_classes=None,
    ):
        super().__init__()
        self.num_classes = num_classes if claimed_classes is None else claimed_classes
        self.loss_weight = 1.0
        self.conv = nn.Conv2d(in_channels[-1], num_classes + int(extra_class), 1)
        self.relu_in_place, self.detach, self.none_error = relu_in_place, detach, none_error

    def forward(self, features, prev_output=None):
        if prev_output is None and self.none_error is not None:
            raise self.none_error("put a head before this one")
        x = features[-1]
        if self.relu_in_place:
            x = F.relu_(x)
        if self.detach:
            x = x.detach()
        return self.conv(x)


def test_tiny_head_passes():
    assert check_head(TinyHead).kind == "head"
    # Refusing prev_output None with a ZooError is allowed (a head that needs a previous head).
    assert check_head(TinyHead, none_error=ConfigError).kind == "head"


def test_head_with_the_wrong_class_count_is_caught():
    with pytest.raises(
        ConformanceError,
        match=r"head 'bad': returned logits of shape \(2, 6, 2, 3\) .* expected "
        r"\(N, num_classes, h, w\) = \(2, 5, h, w\)",
    ):
        check_head(TinyHead, name="bad", extra_class=True)
    with pytest.raises(ConformanceError, match="has num_classes 124, but was built for 7"):
        check_head(TinyHead, num_classes=7, claimed_classes=124)


def test_head_modifying_the_features_in_place_is_caught():
    with pytest.raises(ConformanceError, match="modified its `features` in place"):
        check_head(TinyHead, relu_in_place=True)


def test_head_raising_value_error_instead_of_zoo_error_is_caught():
    with pytest.raises(ConformanceError) as caught:
        check_head(TinyHead, name="needs-fcn", none_error=ValueError)
    message = str(caught.value)
    assert message.startswith(
        "head 'needs-fcn': raised ValueError: put a head before this one instead of a "
        "zoo_core.errors.ZooError for features"
    )
    assert "prev_output None" in message


def test_head_cutting_the_gradient_to_the_backbone_is_caught():
    with pytest.raises(ConformanceError, match="no gradient reached the features in train mode"):
        check_head(TinyHead, detach=True)


def test_head_checks_inject_only_the_arguments_the_factory_takes():
    def factory(num_classes, width=4):  # takes neither in_channels nor in_strides: they are not passed
        head = TinyHead([32], [32], num_classes)
        head.width = width
        return head

    assert check_head(factory, width=8).kind == "head"
    with pytest.raises(
        ConformanceError,
        match=r"its factory raised TypeError: .*unexpected keyword argument "
        r"'depth'.* when called with \{'depth': 3, 'num_classes': 5\}",
    ):
        check_head(factory, name="f", depth=3)


# -- losses ---------------------------------------------------------------------------


class TinyCE:
    """Cross-entropy that resizes, ignores 255, returns 0 for an all-void batch and checks the ids."""

    def __init__(self, check_ids=True, void_safe=True, resize=True, ignore=True, in_place=False):
        self.check_ids, self.void_safe, self.resize, self.ignore, self.in_place = (
            check_ids,
            void_safe,
            resize,
            ignore,
            in_place,
        )

    def __call__(self, output, target, context=None):
        if self.resize:
            output = F.interpolate(output, size=target.shape[-2:], mode="bilinear", align_corners=False)
        labelled = target != 255
        if self.void_safe and not labelled.any():
            return output.sum() * 0.0
        if self.check_ids and labelled.any() and int(target[labelled].max()) >= output.shape[1]:
            raise DataError("target ids outside the classes")
        if self.in_place:
            target.masked_fill_(~labelled, -100)
            return F.cross_entropy(output, target, ignore_index=-100)
        if not self.ignore:
            target = target.clamp(max=output.shape[1] - 1)
        return F.cross_entropy(output, target, ignore_index=255)


def test_tiny_loss_passes():
    assert check_loss(TinyCE).kind == "loss"


def test_head_and_loss_under_autocast(catalog):
    report = check_head(catalog.get("head", "fcn").factory, channels=16, amp="bf16")
    assert report.checked[-1] == "autocast bf16: same shapes, finite"
    report = check_loss(catalog.get("loss", "ce").factory, amp="bf16")
    assert report.checked[-1] == "autocast bf16: finite loss"


def test_loss_that_does_not_ignore_255_is_caught():
    with pytest.raises(
        ConformanceError,
        match=r"loss 'clamp': does not ignore pixels labelled 255: with one labelled "
        r"pixel, changing the logits of the others changed the loss",
    ):
        check_loss(TinyCE, name="clamp", ignore=False)


def test_loss_modifying_its_target_in_place_is_caught():
    with pytest.raises(ConformanceError, match="loss 'TinyCE': modified its `target` in place"):
        check_loss(TinyCE, in_place=True)


def test_loss_that_does_not_resize_is_caught():
    with pytest.raises(ConformanceError) as caught:
        check_loss(TinyCE, resize=False)
    message = str(caught.value)
    assert "on valid input (logits (2, 5, 9, 13) and target (2, 33, 50))" in message


def test_loss_returning_nan_for_an_all_void_batch_is_caught():
    # F.cross_entropy's mean over zero labelled pixels is 0/0.
    with pytest.raises(ConformanceError, match="returned nan for a target with every pixel 255"):
        check_loss(TinyCE, void_safe=False)


def test_loss_raising_index_error_for_a_bad_id_is_caught():
    with pytest.raises(
        ConformanceError,
        match=r"raised IndexError: .* instead of a zoo_core.errors.ZooError for a "
        r"target holding id 5 with 5 classes",
    ):
        check_loss(TinyCE, check_ids=False)


def test_loss_returning_a_map_instead_of_a_scalar_is_caught():
    def per_pixel():
        return lambda output, target, context: F.cross_entropy(
            F.interpolate(output, size=target.shape[-2:]), target, ignore_index=255, reduction="none"
        )

    with pytest.raises(ConformanceError, match=r"returned \(2, 33, 50\) for .*; return a 0-dim tensor"):
        check_loss(per_pixel)


# -- remappers ------------------------------------------------------------------------


class TinyRemapper:
    """Source 0 void, 1 road, 2 sky. Each flag breaks one rule."""

    source_classes = ["void", "road", "sky"]

    def __init__(self, sky_id=5, lut_dtype=np.uint8, in_place=False, fraction=False, wide="refuse"):
        self.lut = np.full(256, 255, dtype=np.uint8)
        self.lut[1], self.lut[2] = 0, sky_id
        self.lut = self.lut.astype(lut_dtype)
        self.in_place, self.fraction, self.wide = in_place, fraction, wide

    def __call__(self, mask):
        if isinstance(mask, torch.Tensor):
            return torch.from_numpy(self.lut)[mask.long()]
        mask = np.asarray(mask)
        if mask.dtype != np.uint8:
            if self.wide == "refuse" and mask.max() > 255:
                raise DataError("label values above 255: not a label map")
            if self.wide == "wrap":
                mask = mask.astype(np.uint8)
        if self.in_place:
            mask[...] = self.lut[mask]
            return mask
        return self.lut[mask]

    def keep(self, remapped):
        fraction = float((np.asarray(remapped) != 255).mean())
        return fraction if self.fraction else fraction >= 0.5


def test_tiny_remapper_passes():
    assert check_remapper(TinyRemapper).kind == "remapper"


def test_remapper_with_an_id_outside_vspw_is_caught():
    with pytest.raises(ConformanceError, match=r"`lut` maps to \[200\], outside train ids 0..123 and 255"):
        check_remapper(TinyRemapper, sky_id=200)
    with pytest.raises(ConformanceError, match="`lut` has shape .* and dtype int64; it must be 256 uint8 values"):
        check_remapper(TinyRemapper, lut_dtype=np.int64)


def test_remapper_modifying_the_mask_in_place_is_caught():
    with pytest.raises(ConformanceError, match="modified its `mask` in place"):
        check_remapper(TinyRemapper, in_place=True)


def test_remapper_keep_returning_a_fraction_is_caught():
    with pytest.raises(ConformanceError, match=r"keep\(\) of a fully labelled remapped array returned a float"):
        check_remapper(TinyRemapper, fraction=True)


def test_remapper_on_16_bit_label_maps_must_refuse_with_a_zoo_error():
    with pytest.raises(ConformanceError, match="accepted a 16-bit label map with values up to 1000 instead of raising"):
        check_remapper(TinyRemapper, wide="wrap")
    with pytest.raises(
        ConformanceError,
        match=r"raised IndexError: .* instead of a zoo_core.errors.ZooError for a "
        r"16-bit label map",
    ):
        check_remapper(TinyRemapper, wide="index")


# -- TTA policies ---------------------------------------------------------------------


class TinyFlip:
    """The mean of the batch and its mirror. Each flag breaks one rule."""

    def __init__(self, flip_back=True, average=True, keep_last=False, in_place=False, collect=False):
        self.flip_back, self.average, self.keep_last, self.in_place, self.collect = (
            flip_back,
            average,
            keep_last,
            in_place,
            collect,
        )

    def __call__(self, predict, images):
        if self.in_place:
            images.mul_(0.5)
        if self.keep_last:
            self.last = images
        if self.collect:  # every view's prediction kept until all are in: memory grows with the views
            views = [images, images.flip(-1), images.flip(-2), images.flip(-1).flip(-2)]
            probs = [predict(view) for view in views]
            return (probs[0] + probs[1].flip(-1) + probs[2].flip(-2) + probs[3].flip(-2).flip(-1)) / 4
        mirrored = predict(images.flip(-1))
        total = predict(images) + (mirrored.flip(-1) if self.flip_back else mirrored)
        return total / 2 if self.average else total


def test_tiny_tta_passes():
    assert check_tta(TinyFlip).kind == "tta"


def test_tta_not_mapping_views_back_is_caught():
    with pytest.raises(ConformanceError, match=r"tta 'mirror': does not map its views back to the input geometry"):
        check_tta(TinyFlip, name="mirror", flip_back=False)

    class UpsideDown:
        def __call__(self, predict, images):
            return (predict(images) + predict(images.flip(-2))) / 2

    with pytest.raises(
        ConformanceError,
        match=r"does not map its views back .* differs from the prediction of the "
        r"images by 0\.\d+ on average \(input 64x96, batch 2",
    ):
        check_tta(UpsideDown)


def test_tta_summing_without_averaging_is_caught():
    with pytest.raises(
        ConformanceError,
        match=r"changes a prediction that is the same at every pixel \(input 64x96, "
        r"batch 2\): max difference .*; divide the running sum",
    ):
        check_tta(TinyFlip, average=False)


def test_tta_keeping_the_images_of_a_call_is_caught():
    with pytest.raises(
        ConformanceError,
        match=r"keeps references to 1 of its images and predictions after the call "
        r"returned",
    ):
        check_tta(TinyFlip, keep_last=True)


def test_tta_modifying_the_images_in_place_is_caught():
    with pytest.raises(ConformanceError, match=r"modified its `images` in place"):
        check_tta(TinyFlip, in_place=True)


def test_tta_holding_every_view_is_caught():
    with pytest.raises(ConformanceError, match=r"keeps 3 earlier predictions alive while it calls predict again"):
        check_tta(TinyFlip, collect=True)


def test_tta_returning_the_view_size_is_caught():
    class NoResizeBack:
        def __call__(self, predict, images):
            return predict(F.interpolate(images, size=(24, 40), mode="bilinear", align_corners=False))

    with pytest.raises(
        ConformanceError,
        match=r"returned shape \(2, 5, 24, 40\) .* expected \(2, 5, 64, 96\), the "
        r"input's size",
    ):
        check_tta(NoResizeBack)


# -- ensemblers -----------------------------------------------------------------------


class TinyMean:
    """The mean of the models, optionally weighted by name. Each flag breaks one rule."""

    def __init__(self, weights=None, smooth=False, accumulate_in_place=False, bind_error=ConfigError):
        self.weights, self.smooth, self.accumulate_in_place, self.bind_error = (
            weights,
            smooth,
            accumulate_in_place,
            bind_error,
        )
        self.previous = None

    def bind(self, context):
        if self.weights is not None and set(self.weights) != set(context.model_names):
            raise self.bind_error(f"weights name {sorted(self.weights)}, the pipeline {list(context.model_names)}")

    def __call__(self, per_model):
        weights = self.weights or {name: 1.0 for name in per_model}
        probs = list(per_model.values())
        if self.accumulate_in_place:
            total = probs[0]
            for p in probs[1:]:
                total += p
            return total / len(probs)
        total = sum(weights[name] * p for name, p in per_model.items())
        if self.smooth:  # a running average over frames: state kept between calls
            if self.previous is not None and self.previous.shape == total.shape:
                total = 0.5 * total + 0.5 * self.previous
            self.previous = total
        return total


def test_tiny_ensembler_passes():
    assert check_ensembler(TinyMean).kind == "ensembler"
    report = check_ensembler(TinyMean, weights={"a": 1.0, "b": 2.0}, model_names=["a", "b"])
    assert "bind() with models ['a', 'b'] and 5 classes: accepted" in report.checked


def test_stateful_ensembler_is_caught():
    with pytest.raises(
        ConformanceError,
        match="ensembler 'ema': gives a different result for the same frame after "
        "another frame: it keeps state between calls",
    ):
        check_ensembler(TinyMean, name="ema", smooth=True)
    # ... unless smoothing over frames is what it is for.
    assert check_ensembler(TinyMean, smooth=True, per_frame=False).kind == "ensembler"


def test_ensembler_accumulating_into_an_input_is_caught():
    with pytest.raises(ConformanceError, match="modified its `per_model` in place"):
        check_ensembler(TinyMean, accumulate_in_place=True)


def test_ensembler_bind_raising_value_error_is_caught():
    with pytest.raises(
        ConformanceError,
        match=r"raised ValueError: weights name \['a', 'b'\], the pipeline "
        r"\['unknown-a', 'unknown-b'\] instead of a zoo_core.errors.ZooError "
        r"for bind\(\) with the model names",
    ):
        check_ensembler(TinyMean, weights={"a": 1.0, "b": 2.0}, model_names=["a", "b"], bind_error=ValueError)


def test_ensembler_refusing_the_pipelines_own_models_is_caught(catalog):
    with pytest.raises(
        ConformanceError,
        match=r"ensembler 'weighted': raised ConfigError: weighted ensembler: gamma "
        r"needs exactly two models.* on valid input \(bind\(\) with models "
        r"\['a', 'b', 'c'\]",
    ):
        check_ensembler(
            catalog.get("ensembler", "weighted").factory, name="weighted", gamma=0.5, model_names=["a", "b", "c"]
        )
