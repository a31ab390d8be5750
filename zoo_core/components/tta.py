"""Test-time augmentation policies: views of the batch, mapped back and averaged as a running sum."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..interfaces import PredictFn


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _views_sum(
    predict: PredictFn, images: torch.Tensor, size: Sequence[int] | None, flip: bool, total: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """Add the probabilities of ``images`` resized to ``size`` (and its mirror) to ``total``, at input size."""
    out_size = images.shape[-2:]
    view = images if size is None else _resize(images, size)
    probs = predict(view).float()
    if flip:
        probs = probs + predict(view.flip(-1)).float().flip(-1)
    probs = _resize(probs, out_size)
    return (probs if total is None else total + probs), 2 if flip else 1


class IdentityTTA:
    """No augmentation: the prediction of the batch itself."""

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        return predict(images)


class FlipTTA:
    """Average of the batch and its horizontal mirror (flipped back)."""

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        total, count = _views_sum(predict, images, None, True, None)
        return total / count


class MultiScaleFlipTTA:
    """Multi-scale (+ flip) average: the input resized by each scale, predictions resized back (3rd place, Swin)."""

    def __init__(self, scales: Sequence[float] = (0.5, 1.0, 1.5), flip: bool = True):
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(scales)}")
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        total, count = None, 0
        for scale in self.scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            total, views = _views_sum(predict, images, size, self.flip, total)
            count += views
        return total / count


class ResizeFlipTTA:
    """Resize to the training crop size (+ flip), predictions resized back (3rd place, VOLO)."""

    def __init__(self, size: Sequence[int] = (480, 720), flip: bool = True):
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise ValueError(f"size must be [height, width] in pixels, got {list(size)}")
        self.size = (int(size[0]), int(size[1]))
        self.flip = flip

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        total, count = _views_sum(predict, images, self.size, self.flip, None)
        return total / count
