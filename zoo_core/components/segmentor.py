"""A segmentor: a backbone and a cascade of heads (built from a config by ``zoo_core.model_dir.build_segmentor``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..interfaces import Backbone, Head, HeadOutput, MaskClassification, pixel_scores


class Segmentor(nn.Module):
    """``backbone`` then ``heads`` in cascade: each head gets the features and the previous head's output.

    Images are expected normalised the way the backbone was trained (the data pipeline's
    job). The last head is the one used for prediction; the others exist for their losses
    and as input to the heads after them.
    """

    backbone: Backbone
    heads: Sequence[Head]  # an nn.ModuleList

    def __init__(self, backbone: Backbone, heads: Sequence[Head]):
        super().__init__()
        if not heads:
            raise ConfigError("a segmentor needs at least one head")
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)

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

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, C, H, W)`` at the input size (a :data:`~zoo_core.interfaces.PredictFn`)."""
        output = self(images)[-1]
        scores = pixel_scores(output).float()
        if scores.shape[2:] != images.shape[2:]:
            scores = F.interpolate(scores, size=images.shape[2:], mode="bilinear", align_corners=False)
        if isinstance(output, MaskClassification):
            # Mask-classification scores are already non-negative; only their scale differs per pixel.
            return scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return scores.softmax(dim=1)
