"""The ``volo-unet`` backbone: a timm VOLO encoder followed by the U-Net neck (report 3.3, 3.5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo_core.errors import ConfigError
from zoo_core.nn import TimmBackbone

from .presets import get_preset
from .unet import UNetNeck

OUT_INDICES = (0, 1, 2, 3)
"""VOLO stages kept: the outlooker stage (stride 8, a U-Net skip) and the last three (stride 16, fused)."""


class VoloUNet(nn.Module):
    """VOLO (timm) + a U-Net fusing its last three maps and recovering the resolution (volo-d5, volo-mini).

    ``preset`` fixes the architecture (see :data:`zoo_volo_unet_ocr.presets.PRESETS`);
    ``out_stride``, ``fuse_channels``, ``decoder_channels``, ``drop_path_rate`` and
    ``img_size`` (the size VOLO's fixed position embedding is stored at) override it. Any
    input size is accepted: it is padded to a multiple of 16 and the position embedding is
    resampled to the input for the call (the stored one keeps its size). The outputs are
    the U-Net's levels, finest first (``strides`` e.g. ``[2, 4, 8, 16]``). The encoder is
    ``self.encoder`` (pretrainable), the U-Net ``self.neck`` (newly initialised, trained at
    the decoder's learning rate). ``stem_skip`` feeds the convolutional stem's stride-2
    activations to the stride-2 U-Net block. ``pretrained`` loads timm's ImageNet weights
    (``volo-d5``); offline, point timm at a local file with
    ``pretrained_cfg_overlay: {file: path/to/model.safetensors}``.
    """

    def __init__(
        self,
        preset: str = "volo-d5",
        pretrained: bool = False,
        out_stride: int | None = None,
        fuse_channels: int | None = None,
        decoder_channels: Sequence[int] | None = None,
        stem_skip: bool = True,
        drop_path_rate: float | None = None,
        img_size: int | None = None,
        pretrained_cfg_overlay: dict[str, Any] | None = None,
    ):
        super().__init__()
        spec = get_preset(preset)
        if pretrained and not spec.pretrainable:
            raise ConfigError(
                f"backbone 'volo-unet': preset {preset!r} has no pretrained weights; "
                "set pretrained: false, or use preset volo-d5"
            )
        drop_path_rate = spec.drop_path_rate if drop_path_rate is None else drop_path_rate
        if not isinstance(drop_path_rate, (int, float)) or not 0 <= drop_path_rate < 1:
            raise ConfigError(f"backbone 'volo-unet' drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        img_size = spec.img_size if img_size is None else img_size
        if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < 16 or img_size % 16:
            raise ConfigError(f"backbone 'volo-unet' img_size must be a positive multiple of 16, got {img_size!r}")
        if pretrained and img_size != spec.img_size:
            raise ConfigError(
                f"backbone 'volo-unet': the pretrained {spec.model_name} position embedding is stored "
                f"for img_size {spec.img_size}, not {img_size}; leave img_size unset (any input size "
                "works: the embedding is resampled per input)"
            )
        args: dict[str, Any] = dict(spec.arch, img_size=img_size, drop_path_rate=drop_path_rate)
        if pretrained_cfg_overlay is not None:
            args["pretrained_cfg_overlay"] = dict(pretrained_cfg_overlay)
        if spec.arch:
            from . import timm_volo  # noqa: F401  (registers the zoo_volo architecture with timm)

        self.preset = preset
        self.encoder = TimmBackbone(spec.model_name, pretrained=pretrained, out_indices=OUT_INDICES, **args)
        channels, strides = self.encoder.channels, self.encoder.strides
        if len(strides) != 4 or len(set(strides[1:])) != 1 or strides[0] * 2 != strides[1]:
            raise ConfigError(
                f"backbone 'volo-unet': expected VOLO's geometry (stride s, then 2s three times), "
                f"got strides {strides} from {spec.model_name}"
            )
        deep_stride = strides[-1]
        skip_channels = {strides[0]: channels[0]}
        self.stem_module: str | None = None
        self.stem_stride = 0
        if stem_skip:
            self.stem_module, self.stem_stride, skip_channels[self.stem_stride] = _find_stem(self.encoder)
        self.neck = UNetNeck(
            channels[1:],
            deep_stride,
            skip_channels,
            spec.fuse_channels if fuse_channels is None else fuse_channels,
            tuple(spec.decoder_channels if decoder_channels is None else decoder_channels),
            spec.out_stride if out_stride is None else out_stride,
        )
        if self.stem_stride not in self.neck.block_strides:
            self.stem_module = None  # no block at the stem's stride: no need to capture it
        self.channels: list[int] = list(self.neck.channels)
        self.strides: list[int] = list(self.neck.strides)
        self.pad_multiple = deep_stride

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % self.pad_multiple, -width % self.pad_multiple
        if pad_h or pad_w:
            # Padded here, not in the encoder, so every level is exactly twice the size of the one below it.
            images = F.pad(images, (0, pad_w, 0, pad_h))
        stem: list[torch.Tensor] = []
        handle = None
        if self.stem_module is not None:
            # A hook for this call only: no state on the module, safe to copy and to replicate.
            handle = self.encoder.get_submodule(self.stem_module).register_forward_hook(
                lambda _module, _inputs, output: stem.append(output)
            )
        try:
            maps = self.encoder(images)
        finally:
            if handle is not None:
                handle.remove()
        skips = {self.encoder.strides[0]: maps[0]}
        if stem:
            skips[self.stem_stride] = stem[-1]
        outputs = self.neck(maps[1:], skips)
        return [
            out[..., : math.ceil(height / stride), : math.ceil(width / stride)].contiguous()
            for out, stride in zip(outputs, self.strides)
        ]


def _find_stem(encoder: nn.Module) -> tuple[str, int, int]:
    """``(module name, stride, channels)`` of VOLO's convolutional stem (``patch_embed.conv``)."""
    for name, module in encoder.named_modules():
        if name.endswith("patch_embed.conv") and isinstance(module, nn.Sequential):
            convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
            stride = math.prod(conv.stride[0] for conv in convs)
            return name, stride, convs[-1].out_channels
    raise ConfigError(
        "backbone 'volo-unet': the encoder has no convolutional stem (patch_embed.conv) "
        "to take a skip from; set stem_skip: false"
    )
