"""FCN, OCR and UperNet decode heads, with mmsegmentation's semantics (decode_head.py, fcn_head.py, ocr_head.py,
uper_head.py, psp_head.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..interfaces import HeadOutput, pixel_scores

INPUT_TRANSFORMS = (None, "resize_concat", "multiple_select")


def resize_concat(features: Sequence[torch.Tensor], align_corners: bool = False) -> torch.Tensor:
    """``features`` resized bilinearly to the first one's size and concatenated along channels."""
    size = features[0].shape[2:]
    resized = [
        x if x.shape[2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
        for x in features
    ]
    return torch.cat(resized, dim=1)


class ConvBNReLU(nn.Module):
    """mmseg's ``ConvModule`` with BN and ReLU; same parameter names, so mmseg weights convert by key."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        # No conv bias: BN supplies it.
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2 * dilation, dilation=dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class BaseDecodeHead(nn.Module):
    """Selects the input maps, and classifies (dropout + 1x1 ``conv_seg``).

    ``in_channels``, ``in_strides`` (the backbone's lists) and ``num_classes`` are injected
    by the segmentor builder. ``in_index`` picks the maps: an int, or a list together with
    ``input_transform="resize_concat"`` (every picked map resized bilinearly to the first
    one's size and concatenated along channels) or ``"multiple_select"`` (the picked maps
    as a list; ``self.in_channels`` is then the list of their channels, as in mmseg). The
    head's output has the resolution of the (first) picked map: ``self.stride``.
    """

    # Public (docs/api.md): the attribute path of the final classifier, so a plugin can swap it.
    classifier_path = "conv_seg"

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        num_classes: int,
        channels: int = 512,
        in_index: int | Sequence[int] = -1,
        input_transform: str | None = None,
        dropout_ratio: float = 0.1,
        loss_weight: float = 1.0,
        align_corners: bool = False,
    ):
        super().__init__()
        if input_transform not in INPUT_TRANSFORMS:
            raise ConfigError(
                f"head input_transform {input_transform!r} is not supported; "
                f"use one of: {', '.join(map(str, INPUT_TRANSFORMS))}"
            )
        if input_transform is None and not isinstance(in_index, int):
            raise ConfigError(
                f"head in_index {list(in_index)} is a list: set input_transform: resize_concat (or multiple_select), "
                "or give a single index"
            )
        indices = [in_index] if isinstance(in_index, int) else list(in_index)
        for index in indices:
            if not -len(in_channels) <= index < len(in_channels):
                raise ConfigError(
                    f"head in_index {index} is out of range: the backbone gives "
                    f"{len(in_channels)} feature maps (channels {list(in_channels)})"
                )
        self.in_index = in_index
        self.input_transform = input_transform
        selected = [in_channels[i] for i in indices]
        self.in_channels: int | list[int] = selected if input_transform == "multiple_select" else sum(selected)
        self.stride = in_strides[indices[0]]
        self.channels = channels
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.align_corners = align_corners
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def transform_inputs(self, features: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        if self.input_transform is None:
            return features[self.in_index]
        if self.input_transform == "multiple_select":
            return [features[i] for i in self.in_index]
        return resize_concat([features[i] for i in self.in_index], self.align_corners)

    def cls_seg(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(feats))


class FCNHead(BaseDecodeHead):
    """FCN decode head (``num_convs`` conv-BN-ReLU blocks, optional input concat); the usual auxiliary head.

    In the OCR cascade it is the first head, with ``loss_weight: 0.4``; its logits are
    the soft object regions of the OCR head.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        num_classes: int,
        num_convs: int = 2,
        kernel_size: int = 3,
        concat_input: bool = True,
        dilation: int = 1,
        **kwargs,
    ):
        super().__init__(in_channels, in_strides, num_classes, **kwargs)
        if num_convs < 0:
            raise ConfigError(f"fcn head num_convs must be >= 0, got {num_convs}")
        if num_convs == 0 and self.in_channels != self.channels:
            raise ConfigError(
                f"fcn head with num_convs: 0 needs channels == input channels ({self.in_channels}), "
                f"got channels {self.channels}"
            )
        blocks = [
            ConvBNReLU(self.in_channels if i == 0 else self.channels, self.channels, kernel_size, dilation)
            for i in range(num_convs)
        ]
        self.convs = nn.Sequential(*blocks) if blocks else nn.Identity()
        self.conv_cat = (
            ConvBNReLU(self.in_channels + self.channels, self.channels, kernel_size) if concat_input else None
        )

    def forward(self, features: list[torch.Tensor], prev_output: HeadOutput | None = None) -> torch.Tensor:
        x = self.transform_inputs(features)
        feats = self.convs(x)
        if self.conv_cat is not None:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return self.cls_seg(feats)


class SpatialGatherModule(nn.Module):
    """Object region representations: pixel features averaged with each region's softmax over pixels."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        n, k = probs.shape[:2]
        probs = F.softmax(self.scale * probs.reshape(n, k, -1), dim=2)  # (N, K, HW)
        context = torch.bmm(probs, feats.flatten(2).transpose(1, 2))  # (N, K, C)
        return context.transpose(1, 2).unsqueeze(3)  # (N, C, K, 1)


def _projection(in_channels: int, channels: int, num_convs: int) -> nn.Sequential:
    return nn.Sequential(*[ConvBNReLU(in_channels if i == 0 else channels, channels) for i in range(num_convs)])


class ObjectAttentionBlock(nn.Module):
    """Pixel -> object attention (mmseg's ``_SelfAttentionBlock`` as OCR configures it), fused with the pixels.

    Query from pixels and key/value from object regions are projected to ``channels``;
    the attended context is projected back to ``in_channels``, concatenated with the
    pixel features and fused by a 1x1 conv.
    """

    def __init__(self, in_channels: int, channels: int, scale: int = 1):
        super().__init__()
        self.channels = channels
        self.query_project = _projection(in_channels, channels, 2)
        self.key_project = _projection(in_channels, channels, 2)
        self.value_project = _projection(in_channels, channels, 1)
        self.out_project = _projection(channels, in_channels, 1)
        self.query_downsample = nn.MaxPool2d(kernel_size=scale) if scale > 1 else None
        self.bottleneck = ConvBNReLU(in_channels * 2, in_channels)

    def forward(self, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        query_feats = pixels if self.query_downsample is None else self.query_downsample(pixels)
        query = self.query_project(query_feats).flatten(2).transpose(1, 2)  # (N, HW, c)
        key = self.key_project(regions).flatten(2)  # (N, c, K)
        value = self.value_project(regions).flatten(2).transpose(1, 2)  # (N, K, c)
        attention = F.softmax(torch.bmm(query, key) * self.channels**-0.5, dim=-1)
        context = torch.bmm(attention, value).transpose(1, 2)
        context = self.out_project(context.reshape(context.shape[0], self.channels, *query_feats.shape[2:]))
        if context.shape[2:] != pixels.shape[2:]:
            context = F.interpolate(context, size=pixels.shape[2:], mode="bilinear", align_corners=False)
        return self.bottleneck(torch.cat([context, pixels], dim=1))


class OCRHead(BaseDecodeHead):
    """OCR head (object-contextual representations); refines the previous head's logits.

    ``channels`` is the pixel representation width (the 3rd-place report: 1024),
    ``ocr_channels`` the attention width (report: 512). ``prev_output`` (an FCN head's
    logits) is required: it gives the soft object regions.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        num_classes: int,
        ocr_channels: int = 256,
        scale: int = 1,
        **kwargs,
    ):
        super().__init__(in_channels, in_strides, num_classes, **kwargs)
        self.bottleneck = ConvBNReLU(self.in_channels, self.channels, 3)
        self.spatial_gather_module = SpatialGatherModule(scale)
        self.object_context_block = ObjectAttentionBlock(self.channels, ocr_channels, scale)

    def forward(self, features: list[torch.Tensor], prev_output: HeadOutput | None = None) -> torch.Tensor:
        if prev_output is None:
            raise ConfigError(
                "the ocr head needs the output of a head before it (its soft object regions): "
                "put an fcn head before it in the model's heads list"
            )
        x = self.transform_inputs(features)
        feats = self.bottleneck(x)
        regions = pixel_scores(prev_output)
        if regions.shape[2:] != feats.shape[2:]:
            regions = F.interpolate(regions, size=feats.shape[2:], mode="bilinear", align_corners=self.align_corners)
        context = self.spatial_gather_module(feats, regions)
        return self.cls_seg(self.object_context_block(feats, context))


class PPM(nn.ModuleList):
    """Pyramid pooling (PSPNet): for each scale, average-pool to ``scale x scale``, 1x1 ConvBNReLU, upsample back."""

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int, align_corners: bool = False):
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(in_channels, channels)) for s in pool_scales)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[2:]
        return [F.interpolate(ppm(x), size=size, mode="bilinear", align_corners=self.align_corners) for ppm in self]


class UPerHead(BaseDecodeHead):
    """UperNet head (Unified Perceptual Parsing): pyramid pooling on the last map, then an FPN over all of them.

    mmsegmentation's ``UPerHead``, module for module (same parameter names): ``psp_modules`` (PPM with
    ``pool_scales``) and a 3x3 ``bottleneck`` on the coarsest map; a 1x1 lateral and a 3x3 ``fpn_convs``
    ConvBNReLU for every other map; a top-down path (each level plus the bilinearly upsampled coarser
    one); all levels resized to the finest and concatenated; a 3x3 ``fpn_bottleneck``; the classifier.
    ``in_index`` picks the maps (default the four stages of a Swin); the output has the finest map's
    resolution (stride 4). In training, the 1x1 pooled branch needs two or more images per
    micro-batch (BatchNorm of one value per channel is undefined), as in mmseg.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        num_classes: int,
        in_index: Sequence[int] = (0, 1, 2, 3),
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        **kwargs,
    ):
        if isinstance(in_index, int) or len(in_index) < 2:
            raise ConfigError(f"uper head in_index must list two or more feature maps, got {in_index!r}")
        if not pool_scales or any(not isinstance(s, int) or s < 1 for s in pool_scales):
            raise ConfigError(f"uper head pool_scales must be positive integers, got {pool_scales!r}")
        super().__init__(
            in_channels, in_strides, num_classes, in_index=list(in_index), input_transform="multiple_select", **kwargs
        )
        channels, levels = self.channels, self.in_channels
        self.pool_scales = tuple(pool_scales)
        self.psp_modules = PPM(pool_scales, levels[-1], channels, self.align_corners)
        self.bottleneck = ConvBNReLU(levels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels) for c in levels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in levels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(levels) * channels, channels, 3)

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, features: list[torch.Tensor], prev_output: HeadOutput | None = None) -> torch.Tensor:
        inputs = self.transform_inputs(features)
        top = inputs[-1]
        if self.training and top.shape[0] < 2 and 1 in self.pool_scales:
            raise ConfigError(
                "uper head: in training, pool scale 1 needs two or more images per micro-batch (BatchNorm of a "
                "single value); set train.batch_size to 2 or more, or leave 1 out of pool_scales"
            )
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        laterals.append(self.bottleneck(torch.cat([top, *self.psp_modules(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse to fine
            laterals[i - 1] = laterals[i - 1] + self._resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = outs[0].shape[2:]
        outs = [outs[0]] + [self._resize(x, size) for x in outs[1:]]
        return self.cls_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))
