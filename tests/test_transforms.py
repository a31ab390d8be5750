"""Augmentation of the 3rd-place recipe: ranges, frequencies, geometry and reproducibility."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import yaml
from conftest import TINY_MODEL

from zoo_core.data.transforms import (
    DEFAULT_TRAIN_TRANSFORMS,
    Compose,
    MultiScale,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    build_transforms,
    hsv_to_rgb,
    rgb_to_hsv,
)
from zoo_core.errors import ConfigError

SEEDS = range(400)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def sample(height: int = 48, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(1234)
    image = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = generator.choice(np.array([3, 7, 255], dtype=np.uint8), (height, width))
    return image, mask


def test_multiscale_sizes_follow_the_recipe_formula():
    image, mask = sample(50, 80)
    transform = MultiScale()
    for seed in range(100):
        # Plain re-implementation of the report: alpha ~ U(1, 2), reciprocal with p = 0.5, beta ~ U(-0.2, 0.2).
        draws = rng(seed)
        alpha = draws.uniform(1.0, 2.0)
        alpha = 1 / alpha if draws.random() < 0.5 else alpha
        beta_h, beta_w = draws.uniform(-0.2, 0.2, 2)
        expected = (round(50 * alpha * (1 + beta_h)), round(80 * alpha * (1 + beta_w)))
        out_image, out_mask = transform(image, mask, rng(seed))
        assert out_mask.shape == expected and out_image.shape == (*expected, 3)


def test_multiscale_ranges_and_reciprocal_frequency():
    image, mask = sample(50, 80)
    sizes = np.array([MultiScale()(image, mask, rng(seed))[1].shape for seed in SEEDS])
    assert sizes[:, 0].min() >= round(50 * 0.5 * 0.8) and sizes[:, 0].max() <= round(50 * 2 * 1.2)
    assert sizes[:, 1].min() >= round(80 * 0.5 * 0.8) and sizes[:, 1].max() <= round(80 * 2 * 1.2)
    aspect = (sizes[:, 0] / 50) / (sizes[:, 1] / 80)
    assert aspect.min() >= 0.8 / 1.2 - 0.03 and aspect.max() <= 1.2 / 0.8 + 0.03
    assert aspect.std() > 0.05  # the two axes really are scaled independently
    # Without beta the scale is alpha itself: shrinking means the reciprocal was taken.
    no_beta = np.array([MultiScale(beta=(0, 0))(image, mask, rng(seed))[1].shape for seed in SEEDS])
    scale = no_beta[:, 1] / 80
    assert 0.43 < np.mean(scale < 1) < 0.57
    assert scale.min() >= 0.5 - 1 / 80 and scale.max() <= 2 + 1 / 80
    np.testing.assert_allclose(no_beta[:, 0] / 50, scale, atol=0.02)


def test_multiscale_interpolation_modes():
    image, mask = sample()
    flat = np.full_like(image, 90)
    out_image, out_mask = MultiScale()(flat, mask, rng(5))
    assert (out_image == 90).all()  # bilinear keeps a constant image constant
    assert set(np.unique(out_mask)) <= {3, 7, 255}  # nearest never invents labels
    _, big = MultiScale(alpha=(2, 2), reciprocal_prob=0, beta=(0, 0))(image, mask, rng(0))
    np.testing.assert_array_equal(big[::2, ::2], mask)


def test_random_crop_is_a_window_of_the_input():
    height, width = 40, 60
    coded = np.arange(height * width).reshape(height, width)
    image = np.stack([coded // 256, coded % 256, np.zeros_like(coded)], -1).astype(np.uint8)
    mask = (coded % 251).astype(np.uint8)
    corners = set()
    for seed in range(50):
        out_image, out_mask = RandomCrop(size=(16, 24))(image, mask, rng(seed))
        assert out_image.shape == (16, 24, 3) and out_mask.shape == (16, 24)
        index = out_image[0, 0, 0].astype(int) * 256 + out_image[0, 0, 1]
        top, left = divmod(index, width)
        assert top <= height - 16 and left <= width - 24
        np.testing.assert_array_equal(out_image, image[top : top + 16, left : left + 24])
        np.testing.assert_array_equal(out_mask, mask[top : top + 16, left : left + 24])
        corners.add((top, left))
    assert len(corners) > 30


def test_random_crop_pads_image_with_0_and_mask_with_255():
    image, mask = sample(20, 70)
    out_image, out_mask = RandomCrop(size=(32, 48))(image, mask, rng(3))
    assert out_image.shape == (32, 48, 3) and out_mask.shape == (32, 48)
    assert (out_image[20:] == 0).all() and (out_mask[20:] == 255).all()
    # The width was larger: the crop kept 48 of the 70 columns.
    left = next(x for x in range(23) if np.array_equal(out_mask[:20], mask[:, x : x + 48]))
    np.testing.assert_array_equal(out_image[:20], image[:, left : left + 48])


def test_random_crop_cat_max_ratio_prefers_mixed_windows():
    mask = np.zeros((10, 200), dtype=np.uint8)
    mask[:, 100:120] = 1
    image = np.zeros((10, 200, 3), dtype=np.uint8)

    def mixed_fraction(ratio: float) -> float:
        good = 0
        for seed in range(200):
            crop = RandomCrop(size=(10, 40), cat_max_ratio=ratio)(image, mask, rng(seed))[1]
            counts = np.bincount(crop.ravel(), minlength=2)
            good += counts.max() / counts.sum() < 0.75
        return good / 200

    # 39 of the 161 windows are mixed: about 24% by chance, about 94% with 10 tries.
    assert mixed_fraction(1.0) < 0.35
    assert mixed_fraction(0.75) > 0.85


def test_flip_moves_image_and_mask_together():
    image, mask = sample()
    flipped_image, flipped_mask = RandomFlip(prob=1.0)(image, mask, rng(0))
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    np.testing.assert_array_equal(flipped_mask, mask[:, ::-1])
    same_image, same_mask = RandomFlip(prob=0.0)(image, mask, rng(0))
    assert np.array_equal(same_image, image) and np.array_equal(same_mask, mask)
    paired = image.copy()
    paired[..., 0] = mask
    flips = 0
    for seed in SEEDS:
        out_image, out_mask = RandomFlip()(paired, mask, rng(seed))
        assert np.array_equal(out_image[..., 0], out_mask)
        flips += not np.array_equal(out_mask, mask)
    assert 0.43 < flips / len(SEEDS) < 0.57


def only(op: str, **overrides) -> PhotoMetricDistortion:
    """A distortion in which only ``op`` can change the image."""
    neutral = dict(brightness_delta=0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
    full = dict(brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18)
    return PhotoMetricDistortion(**{**neutral, op: full[op], **overrides})


def test_brightness_and_contrast_stay_within_bounds_and_fire_half_the_time():
    gray = np.full((4, 4, 3), 100, dtype=np.uint8)
    mask = np.zeros((4, 4), dtype=np.uint8)
    brightness = [only("brightness_delta")(gray, mask, rng(seed))[0] for seed in SEEDS]
    deltas = np.array([b.astype(int) - 100 for b in brightness])
    assert deltas.min() >= -32 and deltas.max() <= 32 and deltas.min() < -25 and deltas.max() > 25
    assert all((b == b[0, 0, 0]).all() for b in brightness)  # one offset for the whole image
    assert 0.42 < np.mean(np.abs(deltas).max(axis=(1, 2, 3)) > 0) < 0.58
    contrast = np.array([only("contrast_range")(gray, mask, rng(seed))[0][0, 0, 0] for seed in SEEDS])
    assert contrast.min() >= 50 and contrast.max() <= 150 and contrast.min() < 60 and contrast.max() > 140
    assert 0.42 < np.mean(contrast != 100) < 0.58


def hsv_of(pixel: np.ndarray) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(pixel.astype(float) / 255))


def test_saturation_scales_only_s_and_fires_half_the_time():
    colour = np.array([200, 120, 80], dtype=np.uint8)
    image = np.tile(colour, (3, 3, 1))
    mask = np.zeros((3, 3), dtype=np.uint8)
    h0, s0, v0 = hsv_of(colour)
    changed = 0
    for seed in SEEDS:
        out = only("saturation_range")(image, mask, rng(seed))[0][0, 0]
        h, s, v = hsv_of(out)
        assert abs(h - h0) < 0.01 and abs(v - v0) < 0.003
        assert 0.5 * s0 - 0.01 <= s <= min(1.5 * s0, 1) + 0.01
        changed += not np.array_equal(out, colour)
    assert 0.42 < changed / len(SEEDS) < 0.58


def test_hue_shift_is_bounded_wraps_around_and_fires_half_the_time():
    red = np.tile(np.array([220, 30, 30], dtype=np.uint8), (3, 3, 1))
    mask = np.zeros((3, 3), dtype=np.uint8)
    shifts = []
    for seed in SEEDS:
        out = only("hue_delta")(red, mask, rng(seed))[0][0, 0]
        hue_degrees = hsv_of(out)[0] * 360
        shifts.append((hue_degrees + 180) % 360 - 180)  # signed shift from red (hue 0)
        assert abs(hsv_of(out)[1] - hsv_of(red[0, 0])[1]) < 0.02
    shifts = np.array(shifts)
    # 18 units on OpenCV's 0..180 scale = 36 degrees, either way; small rounding slack.
    assert np.abs(shifts).max() <= 36 + 1.5
    assert shifts.min() < -30 and shifts.max() > 30  # negative shifts wrap to ~330 degrees, not clipped to 0
    assert 0.42 < np.mean(np.abs(shifts) > 1) < 0.58


def test_photometric_leaves_the_mask_and_keeps_uint8():
    image, mask = sample()
    out_image, out_mask = PhotoMetricDistortion(prob=1.0)(image, mask, rng(0))
    assert out_image.dtype == np.uint8 and out_image.shape == image.shape
    assert out_mask is mask
    assert not np.array_equal(out_image, image)


def test_hsv_round_trip_and_agreement_with_colorsys():
    generator = rng(0)
    colours = np.concatenate(
        [
            generator.integers(0, 256, (500, 3)),
            [[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 0, 1]],
        ]
    ).astype(np.float32)
    hsv = rgb_to_hsv(colours)
    assert hsv[:, 0].min() >= 0 and hsv[:, 0].max() < 180
    for rgb, (hue, saturation, value) in zip(colours, hsv):
        h, s, v = colorsys.rgb_to_hsv(*(rgb / 255))
        assert min(abs(h * 180 - hue), 180 - abs(h * 180 - hue)) < 1e-3
        assert abs(s - saturation) < 1e-5 and abs(v * 255 - value) < 1e-3
    assert np.abs(hsv_to_rgb(hsv) - colours).max() < 1e-3
    # Hue is periodic: 190 is 10.
    np.testing.assert_allclose(hsv_to_rgb(hsv + [180, 0, 0]), hsv_to_rgb(hsv), atol=1e-3)


def test_default_recipe_is_reproducible_per_seed():
    image, mask = sample(96, 128)
    spec = [dict(entry) for entry in DEFAULT_TRAIN_TRANSFORMS]
    spec[1]["size"] = [48, 64]
    transforms = build_transforms(spec)
    a = transforms(image, mask, rng(11))
    b = transforms(image, mask, rng(11))
    c = transforms(image, mask, rng(12))
    assert a[0].shape == (48, 64, 3) and a[1].shape == (48, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_default_spec_builds_the_report_recipe():
    transforms = build_transforms(DEFAULT_TRAIN_TRANSFORMS)
    assert isinstance(transforms, Compose)
    kinds = [type(t) for t in transforms.transforms]
    assert kinds == [MultiScale, RandomCrop, RandomFlip, PhotoMetricDistortion]
    scale, crop, flip, photometric = transforms.transforms
    assert scale.alpha == (1.0, 2.0) and scale.reciprocal_prob == 0.5 and scale.beta == (-0.2, 0.2)
    assert crop.size == (480, 853) and flip.prob == 0.5
    assert (photometric.brightness_delta, photometric.hue_delta, photometric.prob) == (32, 18, 0.5)
    assert photometric.contrast_range == photometric.saturation_range == (0.5, 1.5)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "flip"}, r"train.transforms: expected a list"),
        (
            [{"type": "flip"}, {"type": "rotate"}],
            r"train.transforms\[1\].type: Input should be 'multiscale', "
            r"'random-crop', 'flip' or 'photometric' \(got 'rotate'\)",
        ),
        (
            [{"prob": 0.5}],
            r"entries with NAME one of multiscale, random-crop, flip, photometric\n"
            r"  train.transforms\[0\].type: required but missing",
        ),
        ([{"type": "flip"}, 3], r"train.transforms\[1\]: Input should be a valid dictionary"),
        (
            [{"type": "random-crop", "sizes": [1, 2]}],
            r"train.transforms\[0\] \(random-crop\): invalid settings\n"
            r"  train.transforms\[0\].sizes: unknown key; "
            r"allowed keys: type, size, cat_max_ratio",
        ),
        ([{"type": "random-crop", "size": [480]}], r"\[0\].size: must be two positive integers \[height, width\]"),
        ([{"type": "random-crop", "size": [48, 6.5]}], r"\[0\].size\[1\]: Input should be a valid integer"),
        ([{"type": "flip", "prob": 2}], r"\[0\].prob: Input should be less than or equal to 1 \(got 2\)"),
        ([{"type": "multiscale", "alpha": [2, 1]}], r"\[0\].alpha: must be \[low, high\] with low <= high"),
        ([{"type": "multiscale", "alpha": [0, 1]}], r"\[0\].alpha: must be positive"),
        ([{"type": "photometric", "hue_delta": -1}], r"\[0\].hue_delta: Input should be greater than or equal to 0"),
    ],
)
def test_build_transforms_errors_name_the_entry(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_transforms(spec, path="train.transforms")


def test_a_transform_built_in_python_validates_its_settings():
    with pytest.raises(ValueError, match="less than or equal to 1"):  # pydantic's ValidationError is a ValueError
        RandomFlip(prob=1.5)
    with pytest.raises(ValueError, match="extra"):
        RandomCrop(sizes=(4, 4))
    crop = RandomCrop(size=[16, 24])
    assert crop.size == (16, 24) and isinstance(crop.size[0], int)


def test_zoo_train_names_the_bad_transform_before_reading_data(tmp_path, run_zoo):
    pipeline = tmp_path / "train.yaml"
    pipeline.write_text(
        yaml.safe_dump(
            {
                "data": {"root": str(tmp_path / "no-data")},
                "model": TINY_MODEL,
                "train": {
                    "max_iters": 2,
                    "batch_size": 1,
                    "warmup_iters": 0,
                    "transforms": [{"type": "flip"}, {"type": "multiscale", "alpha": [2, 1]}],
                },
            }
        )
    )
    result = run_zoo("train", pipeline, "--out", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    assert "train.transforms[1].alpha: must be [low, high] with low <= high (got [2, 1])" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
