"""Training augmentation of the 3rd-place VSPW 2021 recipe (report section 4.1.1).

Each transform is called as ``transform(image, mask, rng) -> (image, mask)`` with an
HxWx3 uint8 RGB image, an HxW uint8 train-id mask and a ``numpy.random.Generator``, so
that a sample's augmentation is reproducible from its seed alone. The recipe is
multi-scale resize, random crop (padding with 0 / 255 when the image is smaller), random
horizontal flip and photometric distortion, as in mmsegmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from ..errors import ConfigError, describe_validation_error
from ..interfaces import IGNORE_INDEX

Sample = tuple[np.ndarray, np.ndarray]


def _two(what: str) -> BeforeValidator:
    """Accept exactly two values (a YAML list), so a wrong length says what the pair means."""

    def check(value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise PydanticCustomError("pair", "must be two {what}", {"what": what})
        return value

    return BeforeValidator(check)


def _low_high(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise PydanticCustomError("range_order", "must be [low, high] with low <= high")
    return pair


Probability = Annotated[float, Field(ge=0, le=1)]
Range = Annotated[tuple[float, float], _two("numbers [low, high]"), AfterValidator(_low_high)]


def _positive(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] <= 0:
        raise PydanticCustomError("positive", "must be positive (a scale factor)")
    return pair


def _above_minus_one(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] <= -1:
        raise PydanticCustomError("above_minus_one", "must be greater than -1 (1 + beta scales an axis)")
    return pair


class BaseTransform(BaseModel):
    """A transform is its own validated spec: ``type`` names it in ``train.transforms``, the other
    fields are its settings (unknown keys and bad values are refused when it is built)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Sample:
        raise NotImplementedError


class MultiScale(BaseTransform):
    """Resize by ``alpha * (1 + beta)`` per axis.

    ``alpha ~ U(alpha)``, replaced by ``1 / alpha`` with probability ``reciprocal_prob``;
    ``beta1, beta2 ~ U(beta)`` for height and width. The image is resized bilinearly, the
    mask with nearest neighbour.
    """

    type: Literal["multiscale"] = Field("multiscale", repr=False)
    alpha: Annotated[Range, AfterValidator(_positive)] = (1.0, 2.0)
    reciprocal_prob: Probability = 0.5
    beta: Annotated[Range, AfterValidator(_above_minus_one)] = (-0.2, 0.2)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Sample:
        alpha = rng.uniform(*self.alpha)
        if rng.random() < self.reciprocal_prob:
            alpha = 1.0 / alpha
        beta_h, beta_w = rng.uniform(*self.beta, size=2)
        h, w = mask.shape
        size = (max(1, round(w * alpha * (1 + beta_w))), max(1, round(h * alpha * (1 + beta_h))))
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
        return image, mask


class RandomCrop(BaseTransform):
    """Crop ``size = (h, w)`` at a random place; pad bottom/right (image 0, mask 255) if smaller.

    With ``cat_max_ratio < 1`` the crop is redrawn (up to 10 times, as mmsegmentation)
    while a single class covers more than that fraction of its labelled pixels.
    """

    type: Literal["random-crop"] = Field("random-crop", repr=False)
    size: Annotated[tuple[PositiveInt, PositiveInt], _two("positive integers [height, width]")] = (480, 853)
    cat_max_ratio: float = Field(1.0, gt=0, le=1)

    def _window(self, shape: tuple[int, int], rng: np.random.Generator) -> tuple[slice, slice]:
        top = rng.integers(0, max(shape[0] - self.size[0], 0) + 1)
        left = rng.integers(0, max(shape[1] - self.size[1], 0) + 1)
        return slice(top, top + self.size[0]), slice(left, left + self.size[1])

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Sample:
        window = self._window(mask.shape, rng)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                labels = mask[window]
                counts = np.bincount(labels[labels != IGNORE_INDEX], minlength=1)
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                window = self._window(mask.shape, rng)
        image, mask = image[window], mask[window]
        if image.shape[:2] != self.size:
            padded_image = np.zeros((*self.size, 3), dtype=image.dtype)
            padded_mask = np.full(self.size, IGNORE_INDEX, dtype=mask.dtype)
            padded_image[: image.shape[0], : image.shape[1]] = image
            padded_mask[: mask.shape[0], : mask.shape[1]] = mask
            image, mask = padded_image, padded_mask
        return image, mask


class RandomFlip(BaseTransform):
    """Flip image and mask left-right together with probability ``prob``."""

    type: Literal["flip"] = Field("flip", repr=False)
    prob: Probability = 0.5

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Sample:
        if rng.random() < self.prob:
            image, mask = np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
        return image, mask


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB floats in 0..255 -> HSV with H in 0..180 (OpenCV's 2-degree units), S in 0..1, V in 0..255."""
    rgb = rgb.astype(np.float32, copy=False)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(-1)
    chroma = value - rgb.min(-1)
    safe_chroma = np.where(chroma > 0, chroma, 1.0)
    hue = (
        np.select(
            [chroma == 0, value == r, value == g],
            [0.0, ((g - b) / safe_chroma) % 6.0, (b - r) / safe_chroma + 2.0],
            (r - g) / safe_chroma + 4.0,
        )
        * 30.0
    )
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    return np.stack([hue, saturation, value], -1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv` (H in 0..180 wraps around)."""
    hue, saturation, value = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    # Closed form: channel n (5, 3, 1 for R, G, B) = V - V*S*clip(min(k, 4 - k), 0, 1), k = (n + H/60deg) mod 6.
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + hue / 30.0) % 6.0
    return (value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


class PhotoMetricDistortion(BaseTransform):
    """Brightness, contrast, saturation and hue jitter, each applied with probability ``prob``.

    Brightness adds ``U(-brightness_delta, brightness_delta)``; contrast multiplies by
    ``U(contrast_range)``; saturation multiplies HSV's S by ``U(saturation_range)``; hue adds
    ``U(-hue_delta, hue_delta)`` to H on OpenCV's 0..180 scale, wrapping around. As in
    mmsegmentation, contrast comes before or after the HSV steps (a coin flip) and values
    are clipped to 0..255 after each step.
    """

    type: Literal["photometric"] = Field("photometric", repr=False)
    brightness_delta: float = Field(32.0, ge=0)
    contrast_range: Range = (0.5, 1.5)
    saturation_range: Range = (0.5, 1.5)
    hue_delta: float = Field(18.0, ge=0)
    prob: Probability = 0.5

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Sample:
        # Draw every variable up front, so the draws do not depend on which ops fire.
        fire = rng.random(4) < self.prob
        brightness = rng.uniform(-self.brightness_delta, self.brightness_delta)
        contrast = rng.uniform(*self.contrast_range)
        saturation = rng.uniform(*self.saturation_range)
        hue = rng.uniform(-self.hue_delta, self.hue_delta)
        contrast_last = rng.random() < 0.5

        pixels = image.astype(np.float32)
        if fire[0]:
            pixels = np.clip(pixels + brightness, 0, 255)
        if fire[1] and not contrast_last:
            pixels = np.clip(pixels * contrast, 0, 255)
        if fire[2] or fire[3]:
            hsv = rgb_to_hsv(pixels)
            if fire[2]:
                hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
            if fire[3]:
                hsv[..., 0] = (hsv[..., 0] + hue) % 180.0
            pixels = np.clip(hsv_to_rgb(hsv), 0, 255)
        if fire[1] and contrast_last:
            pixels = np.clip(pixels * contrast, 0, 255)
        return np.rint(pixels).astype(np.uint8), mask


class Compose:
    """Apply transforms in order, threading the same generator through them."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            image, mask = transform(image, mask, rng)
        return image, mask

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


TRANSFORMS: dict[str, type[BaseTransform]] = {
    cls.model_fields["type"].default: cls for cls in (MultiScale, RandomCrop, RandomFlip, PhotoMetricDistortion)
}


# What every entry has, checked first: its `type` says which model validates the rest.
_ENTRIES = TypeAdapter(list[TypedDict("TransformEntry", {"type": Literal[tuple(TRANSFORMS)]})])

DEFAULT_TRAIN_TRANSFORMS: list[dict[str, Any]] = [
    {"type": "multiscale", "alpha": [1.0, 2.0], "reciprocal_prob": 0.5, "beta": [-0.2, 0.2]},
    {"type": "random-crop", "size": [480, 853]},
    {"type": "flip", "prob": 0.5},
    {"type": "photometric"},
]
"""The 3rd-place recipe: multi-scale, 480x853 crop, horizontal flip, photometric distortion."""


def build_transforms(spec: Sequence[dict[str, Any]], path: str = "transforms") -> Compose:
    """``[{"type": name, **settings}, ...]`` -> :class:`Compose`; ``path`` names the spec in errors."""
    shape = f"{path}: expected a list of {{type: NAME, ...}} entries with NAME one of {', '.join(TRANSFORMS)}"
    try:
        _ENTRIES.validate_python(spec)
    except ValidationError as exc:
        raise ConfigError(f"{shape}\n{describe_validation_error(exc, path)}") from None
    transforms = []
    for index, entry in enumerate(spec):
        cls = TRANSFORMS[entry["type"]]
        try:
            transforms.append(cls.model_validate(entry))
        except ValidationError as exc:
            raise ConfigError(
                f"{path}[{index}] ({entry['type']}): invalid settings\n"
                f"{describe_validation_error(exc, f'{path}[{index}]', cls)}"
            ) from None
    return Compose(transforms)
