"""A segmentor: a backbone and a cascade of heads (built from a config by ``zoo_core.model_dir.build_segmentor``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..interfaces import Backbone, Head, HeadOutput, MaskClassification


class Segmentor(nn.Module):
    """``backbone`` then ``heads`` in cascade: each head gets the features and the previous head's output.

    Images are expected normalised the way the backbone was trained (the data pipeline's
    job). The last head is the one used for prediction; the others exist for their losses
    and as input to the heads after them. ``size_divisibility`` (detectron2's
    ``SIZE_DIVISIBILITY``; 0: off) pads the images in :meth:`predict` only; ``forward``
    (training) does not pad, so train on crops that are multiples of it.
    """

    backbone: Backbone
    heads: Sequence[Head]  # an nn.ModuleList

    def __init__(self, backbone: Backbone, heads: Sequence[Head], size_divisibility: int = 0):
        super().__init__()
        if not heads:
            raise ConfigError("a segmentor needs at least one head")
        if size_divisibility < 0:
            raise ConfigError(f"size_divisibility must be 0 (off) or a positive number, got {size_divisibility}")
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        self.size_divisibility = size_divisibility

    @property
    def num_classes(self) -> int:
        return self.heads[-1].num_classes

    def forward(self, images: torch.Tensor) -> list[HeadOutput]:
        features = self.backbone(images)
        outputs: list[HeadOutput] = []
        prev_output: HeadOutput | None = None
        for head in self.heads:
            prev_output = head(features, prev_output)
            outputs.append(prev_output)
        return outputs

    def predict(
        self, images: torch.Tensor, size: Sequence[int] | None = None, add_to: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class probabilities ``(N, C, *size)``; ``size`` defaults to the input's (a PredictFn).

        The last head's output is interpolated once (bilinear, ``align_corners=False``), from its
        own resolution straight to ``size``, before it becomes probabilities: logits are
        interpolated, then softmaxed; a :class:`MaskClassification` has its mask logits
        interpolated, then :meth:`~MaskClassification.to_scores`, then its scores divided by
        their per-pixel sum. With ``size_divisibility`` d > 0 the images are zero-padded at the
        bottom and right to multiples of d first (detectron2's ``ImageList``); the output, which
        covers the padded input, is interpolated to the padded equivalent of ``size`` and cropped.

        ``add_to`` (a float32 ``(N, C, *size)`` running sum): the probabilities are added to it
        in place, a band of rows at a time, and it is returned; a view never exists whole.
        """
        height, width = images.shape[2:]
        out_size = (height, width) if size is None else (int(size[0]), int(size[1]))
        target = out_size
        divisor = self.size_divisibility
        if divisor > 0:
            padded = (-(-height // divisor) * divisor, -(-width // divisor) * divisor)
            if padded != (height, width):
                images = F.pad(images, (0, padded[1] - width, 0, padded[0] - height))
                target = (round(padded[0] * out_size[0] / height), round(padded[1] * out_size[1] / width))
        output = self(images)[-1]
        if isinstance(output, MaskClassification):
            # Mask logits go to the output size before the sigmoid (MaskFormer's semantic inference);
            # the scores are non-negative, only their scale differs per pixel.
            scores = output.to_scores(target)[:, :, : out_size[0], : out_size[1]]
            probs = scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)
            return probs if add_to is None else add_to.add_(probs)
        scores = output.float()
        if add_to is not None:
            return _add_upsampled_softmax(scores, target, add_to)
        if tuple(scores.shape[2:]) != target:
            scores = F.interpolate(scores, size=target, mode="bilinear", align_corners=False)
        if target != out_size:
            scores = scores[:, :, : out_size[0], : out_size[1]]
        return scores.softmax(dim=1)


def _add_upsampled_softmax(logits: torch.Tensor, size: tuple[int, int], add_to: torch.Tensor) -> torch.Tensor:
    """``add_to += softmax(interpolate(logits, size))`` cropped to ``add_to``'s size, in bands of rows.

    Bilinear interpolation is separable: the columns are interpolated for the whole (short)
    map, the rows band by band, and each band is softmaxed and added while it is in cache; the
    view's logits and probabilities at ``size`` are never allocated whole (those allocations,
    not the arithmetic, dominate the cost of a view at frame size on a CPU). Agrees with
    ``F.interpolate(...).softmax(1)`` to float rounding (about 1e-7).
    """
    rows, cols = add_to.shape[2:]
    wide = F.interpolate(logits, size=(logits.shape[2], size[1]), mode="bilinear", align_corners=False)
    wide = wide[..., :cols]
    # the source rows of every output row, as F.interpolate computes them (align_corners=False)
    source = (torch.arange(rows, device=logits.device, dtype=torch.float32) + 0.5) * (logits.shape[2] / size[0]) - 0.5
    source = source.clamp_min(0)
    top = source.long()
    bottom = (top + 1).clamp_max(logits.shape[2] - 1)
    weight = (source - top)[:, None].expand(rows, cols)
    band = 16
    for start in range(0, rows, band):
        stop = min(start + band, rows)
        probs = wide.index_select(2, top[start:stop]).lerp_(
            wide.index_select(2, bottom[start:stop]), weight[start:stop]
        )
        add_to[:, :, start:stop].add_(torch.softmax(probs, dim=1, out=probs))
    return add_to
