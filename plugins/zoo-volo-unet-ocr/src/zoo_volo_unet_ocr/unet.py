"""The U-Net neck: fuse the encoder's last maps, then recover the resolution with skip connections.

VOLO-D5's last three maps all have stride 16, so there is no pyramid to walk down: a
top-down (FPN) fusion of equal-size maps is a sum of per-map 1x1 projections, which is
exactly one 1x1 conv on their concatenation. That conv (with BN and ReLU) is the fusion.
The resolution is then recovered as in U-Net: each block upsamples by 2, concatenates the
encoder's map of the new stride where there is one, and applies two 3x3 conv-BN-ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo_core.errors import ConfigError
from zoo_core.nn import ConvBNReLU


class UpBlock(nn.Module):
    """2x bilinear upsampling, concatenation with a skip map (optional), two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(
            ConvBNReLU(in_channels + skip_channels, out_channels, 3), ConvBNReLU(out_channels, out_channels, 3)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNetNeck(nn.Module):
    """Deep maps of one stride -> 1x1 fusion -> U-Net blocks down to ``out_stride``.

    ``skip_channels`` maps a stride to the channels of the encoder map available there
    (VOLO: the outlooker stage at 8, the convolutional stem at 2). The output is every
    level, finest first: ``channels`` and ``strides`` describe them, so decode heads can
    pick one by ``in_index`` (0 is the finest).
    """

    def __init__(
        self,
        deep_channels: Sequence[int],
        deep_stride: int,
        skip_channels: Mapping[int, int],
        fuse_channels: int,
        decoder_channels: Sequence[int],
        out_stride: int,
    ):
        super().__init__()
        levels = _levels(deep_stride, out_stride)
        if levels > len(decoder_channels):
            raise ConfigError(
                f"backbone 'volo-unet': out_stride {out_stride} needs {levels} decoder_channels "
                f"(one per 2x upsampling from stride {deep_stride}), got {list(decoder_channels)}"
            )
        for width in [fuse_channels, *decoder_channels]:
            if not isinstance(width, int) or isinstance(width, bool) or width < 1:
                raise ConfigError(f"backbone 'volo-unet': channel widths must be positive integers, got {width!r}")
        self.fuse = ConvBNReLU(sum(deep_channels), fuse_channels, 1)
        blocks, block_strides = [], []
        in_channels, stride = fuse_channels, deep_stride
        for width in decoder_channels[:levels]:
            stride //= 2
            blocks.append(UpBlock(in_channels, skip_channels.get(stride, 0), width))
            block_strides.append(stride)
            in_channels = width
        self.blocks = nn.ModuleList(blocks)
        self.block_strides = block_strides
        self.channels: list[int] = [*reversed(decoder_channels[:levels]), fuse_channels]
        self.strides: list[int] = [*reversed(block_strides), deep_stride]

    def forward(self, deep: Sequence[torch.Tensor], skips: Mapping[int, torch.Tensor]) -> list[torch.Tensor]:
        """``deep``: maps of ``deep_stride``; ``skips``: stride -> map, each exactly 2x the size of the level above."""
        x = self.fuse(torch.cat(list(deep), dim=1))
        outputs = [x]
        for block, stride in zip(self.blocks, self.block_strides):
            x = block(x, skips.get(stride))
            outputs.append(x)
        return outputs[::-1]


def _levels(deep_stride: int, out_stride: int) -> int:
    """The number of 2x upsamplings from ``deep_stride`` to ``out_stride`` (a power-of-two ratio)."""
    if isinstance(out_stride, int) and not isinstance(out_stride, bool) and 1 <= out_stride <= deep_stride:
        levels = round(math.log2(deep_stride / out_stride))
        if out_stride * 2**levels == deep_stride:
            return levels
    choices = [deep_stride >> k for k in range(int(math.log2(deep_stride)) + 1)]
    raise ConfigError(
        f"backbone 'volo-unet': out_stride must be one of {choices} (the encoder's stride "
        f"{deep_stride} halved by each U-Net block), got {out_stride!r}"
    )
