"""Test-time augmentation policies: views of the batch, mapped back and averaged as a running sum.

Every view's probabilities are asked for at the frame's size (``predict(view, size=...)``), so
the model interpolates its own low-resolution output once, straight to the frame, instead of
to the view and then again to the frame, and added straight into the running sum
(``add_to=``). A ``predict`` without these keywords (a test's fake model) is resized and added
here instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..interfaces import PredictFn


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def accepts(predict: PredictFn, keyword: str) -> bool:
    """Whether ``predict`` takes ``keyword`` (``size``, ``add_to``): the core's does, a plain ``f(images)`` not."""
    try:
        params = inspect.signature(predict).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _batch_flips_arg(value: object) -> bool | None:
    """``batch_flips``: ``True``/``False``, or ``"auto"`` (``None``: decided per call by the device)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("auto", "true", "false"):
        return {"auto": None, "true": True, "false": False}[value.lower()]
    raise ConfigError(
        f"tta: `batch_flips` must be auto, true or false, got {value!r}; auto batches the flipped views on a GPU"
    )


def _flag_arg(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"tta: `{name}` must be true or false, got {value!r}")
    return value


def _pair_arg(name: str, value: object) -> tuple[int, int]:
    """A ``[height, width]`` of positive pixels (an int means a square)."""
    pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        raise ConfigError(f"tta: `{name}` must be [height, width] in pixels, both at least 1, got {value!r}")
    return int(pair[0]), int(pair[1])


class _Views:
    """One policy call: views predicted at the frame's size into running sums (never a stack).

    The views are added into one sum and their mirrors into another, kept in mirror geometry
    and flipped back once at the end (with batched flips: one sum of 2N). With the core's
    ``predict`` (``add_to``) no view is ever allocated whole; with a plain one, its results
    are resized here and added.
    """

    def __init__(self, predict: PredictFn, images: torch.Tensor, batch_flips: bool | None):
        self.predict = predict
        self.with_size = accepts(predict, "size")
        self.with_add_to = accepts(predict, "add_to")
        # Two views in one batch pay off where the device has parallelism to spare (a GPU); on a CPU the
        # batched pair was slower with one thread and no steady win with two (benchmarks/README.md).
        self.batch_flips = images.device.type == "cuda" if batch_flips is None else batch_flips
        self.batch = images.shape[0]
        self.total: torch.Tensor | None = None  # views; batched flips: views (first N) and mirrors (next N)
        self.mirror: torch.Tensor | None = None  # sequential flips: the mirrors, in mirror geometry
        self.paired = False
        self.count = 0

    def at(self, view: torch.Tensor, size: Sequence[int], add_to: torch.Tensor | None = None) -> torch.Tensor:
        """The probabilities of ``view`` at ``size`` (interpolated once), or ``add_to`` with them added."""
        size = (int(size[0]), int(size[1]))
        if add_to is not None and self.with_add_to:
            return self.predict(view, size=size, add_to=add_to)
        probs = self.predict(view, size=size).float() if self.with_size else _resize(self.predict(view).float(), size)
        if not self.with_add_to:  # not the core's predict: its result may be a tensor it keeps, so not updated in place
            probs = probs.clone()
        return probs if add_to is None else add_to.add_(probs)

    def add(self, view: torch.Tensor, size: Sequence[int], flip: bool) -> None:
        """Add ``view`` (and its mirror if ``flip``) at ``size`` to the running sums."""
        if flip and self.batch_flips:
            self.total = self.at(torch.cat([view, view.flip(-1)]), size, self.total)
            self.paired = True
        else:
            self.total = self.at(view, size, self.total)
            if flip:
                self.mirror = self.at(view.flip(-1), size, self.mirror)
        self.count += 2 if flip else 1

    def pair(self, view: torch.Tensor, size: Sequence[int], flip: bool) -> torch.Tensor:
        """A new tensor: the probabilities of ``view`` at ``size``, plus its mirror's flipped back if ``flip``."""
        if flip and self.batch_flips:
            both = self.at(torch.cat([view, view.flip(-1)]), size)
            return both[: self.batch] + both[self.batch :].flip(-1)
        probs = self.at(view, size)
        return probs.add_(self.at(view.flip(-1), size).flip(-1)) if flip else probs

    def mean(self) -> torch.Tensor:
        """The average of every view added, at the frame's geometry."""
        assert self.total is not None, "no view was predicted"
        total = self.total
        if self.paired:
            total = total[: self.batch] + total[self.batch :].flip(-1)
        elif self.mirror is not None:
            total.add_(self.mirror.flip(-1))
        return total.div_(self.count) if self.count > 1 else total


class IdentityTTA:
    """No augmentation: the prediction of the batch itself."""

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        return predict(images)


class FlipTTA:
    """Average of the batch and its horizontal mirror (flipped back).

    ``batch_flips``: predict both as one batch of 2N (``true``), one after the other
    (``false``), or ``auto``: batched on a GPU, sequential on a CPU.
    """

    def __init__(self, batch_flips: bool | str = "auto"):
        self.batch_flips = _batch_flips_arg(batch_flips)

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        views = _Views(predict, images, self.batch_flips)
        views.add(images, images.shape[-2:], True)
        return views.mean()


class MultiScaleFlipTTA:
    """Multi-scale (+ flip) average: the input resized by each scale, predicted at the input's size (3rd place, Swin).

    Each view's scores are interpolated once, from the model's output straight to the input's
    size (then softmax); ``batch_flips`` as for ``flip``.
    """

    def __init__(self, scales: Sequence[float] = (0.5, 1.0, 1.5), flip: bool = True, batch_flips: bool | str = "auto"):
        if (
            not isinstance(scales, (list, tuple))
            or not scales
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales)
        ):
            raise ConfigError(f"tta: `scales` must be a non-empty list of positive numbers, got {scales!r}")
        self.scales = tuple(float(s) for s in scales)
        self.flip = _flag_arg("flip", flip)
        self.batch_flips = _batch_flips_arg(batch_flips)

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        views = _Views(predict, images, self.batch_flips)
        for scale in self.scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            views.add(_resize(images, size), (height, width), self.flip)
        return views.mean()


class ResizeFlipTTA:
    """Resize to the training crop size (+ flip), predicted at the input's size (3rd place, VOLO)."""

    def __init__(self, size: Sequence[int] = (480, 720), flip: bool = True, batch_flips: bool | str = "auto"):
        if isinstance(size, int) or not isinstance(size, (list, tuple)):  # a square is not what VOLO meant
            raise ConfigError(f"tta: `size` must be [height, width] in pixels, got {size!r}")
        self.size = _pair_arg("size", size)
        self.flip = _flag_arg("flip", flip)
        self.batch_flips = _batch_flips_arg(batch_flips)

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        views = _Views(predict, images, self.batch_flips)
        views.add(_resize(images, self.size), images.shape[-2:], self.flip)
        return views.mean()


class SlideTTA:
    """Sliding-window inference (mmsegmentation's ``slide_inference``) for frames larger than the training crop.

    Windows of ``crop_size`` every ``stride`` pixels; the last row and column of windows are
    moved back to end at the frame's edge; each pixel's probabilities are averaged over the
    windows (and, with ``flip``, their mirrors) that cover it. A frame smaller than the crop
    is predicted whole along that side, not padded, as mmsegmentation does. Unlike
    mmsegmentation, which sums logits, the windows' probabilities are averaged: a policy
    only sees probabilities.
    """

    def __init__(
        self,
        crop_size: Sequence[int] | int = (512, 512),
        stride: Sequence[int] | int = (341, 341),
        flip: bool = False,
        batch_flips: bool | str = "auto",
    ):
        self.crop_size = _pair_arg("crop_size", crop_size)
        self.stride = _pair_arg("stride", stride)
        if any(s > c for s, c in zip(self.stride, self.crop_size)):
            raise ConfigError(
                f"tta: `stride` {list(self.stride)} is larger than `crop_size` {list(self.crop_size)}, which would "
                "leave pixels between the windows unpredicted; use a stride of at most the crop size"
            )
        self.flip = _flag_arg("flip", flip)
        self.batch_flips = _batch_flips_arg(batch_flips)

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``(top, bottom, left, right)`` of every window, row by row."""
        return [
            (top, bottom, left, right)
            for top, bottom in _spans(height, self.crop_size[0], self.stride[0])
            for left, right in _spans(width, self.crop_size[1], self.stride[1])
        ]

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        views = _Views(predict, images, self.batch_flips)
        total: torch.Tensor | None = None
        count = torch.zeros(height, width, device=images.device)
        for top, bottom, left, right in self.windows(height, width):
            window = images[:, :, top:bottom, left:right]
            probs = views.pair(window, (bottom - top, right - left), self.flip)
            if total is None:
                total = probs.new_zeros(*probs.shape[:2], height, width)
            total[:, :, top:bottom, left:right] += probs
            count[top:bottom, left:right] += 2 if self.flip else 1
        return total.div_(count)


def _spans(length: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """mmsegmentation's windows along one side: every ``stride``, the last one clamped to end at ``length``."""
    steps = max(length - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(steps):
        end = min(i * stride + crop, length)
        spans.append((max(end - crop, 0), end))
    return spans
