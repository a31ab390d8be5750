"""A segmentor: a backbone and a cascade of heads, assembled from the catalog."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import Catalog
from ..errors import ConfigError
from ..interfaces import HeadOutput, MaskClassification, pixel_scores


class Segmentor(nn.Module):
    """``backbone`` then ``heads`` in cascade: each head gets the features and the previous head's output.

    Images are expected normalised the way the backbone was trained (the data pipeline's
    job). The last head is the one used for prediction; the others exist for their losses
    and as input to the heads after them.
    """

    def __init__(self, backbone: nn.Module, heads: list[nn.Module]):
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
        prev_output: Optional[HeadOutput] = None
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


def build_segmentor(config: Mapping[str, Any], catalog: Optional[Catalog] = None) -> Segmentor:
    """Build a :class:`Segmentor` from a model config.

    ``config`` is ``{"num_classes": 124, "backbone": {"type": "timm", "args": {...}},
    "heads": [{"type": "fcn", "args": {...}}, {"type": "ocr", "args": {...}}]}``. Each head
    is given the backbone's ``in_channels`` and ``in_strides`` and ``num_classes``.
    """
    if catalog is None:
        from ..plugins import get_catalog

        catalog = get_catalog()
    if not isinstance(config, Mapping):
        raise ConfigError(f"model config must be a mapping with num_classes, backbone and heads, "
                          f"got {type(config).__name__}")
    num_classes = config.get("num_classes")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"model.num_classes must be a positive integer, got {num_classes!r}")
    backbone_spec = _component_spec(config.get("backbone"), "model.backbone")
    head_specs = config.get("heads")
    if not isinstance(head_specs, list) or not head_specs:
        raise ConfigError("model.heads must be a non-empty list of {type, args} (for example fcn then ocr)")

    backbone = catalog.build("backbone", *backbone_spec)
    heads = []
    for i, head_spec in enumerate(head_specs):
        name, args = _component_spec(head_spec, f"model.heads[{i}]")
        heads.append(catalog.build("head", name, args, in_channels=list(backbone.channels),
                                   in_strides=list(backbone.strides), num_classes=num_classes))
    return Segmentor(backbone, heads)


def _component_spec(spec: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise ConfigError(f"{where} must be a mapping with a 'type' (component name) and optional 'args', got {spec!r}")
    unknown = set(spec) - {"type", "args"}
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}; allowed: type, args")
    args = spec.get("args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError(f"{where}.args must be a mapping, got {type(args).__name__}")
    return spec["type"], dict(args)
