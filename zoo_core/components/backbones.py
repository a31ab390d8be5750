"""The timm backbone adapter: any timm model as a list of NCHW feature maps of any input size."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError


class TimmBackbone(nn.Module):
    """Any timm model as a feature pyramid (``features_only``), for any input size.

    ``model_args`` go to ``timm.create_model`` (``embed_dim``, ``depths``, ``img_size``, ...).
    Inputs are padded with zeros (bottom/right) to a multiple of the largest stride and the
    maps cropped back to ``ceil(H / stride), ceil(W / stride)``. Models that accept
    ``dynamic_img_size`` (Swin, ViT, EVA) get it, so their windows and position embeddings
    follow the input; a fixed NHWC position embedding (VOLO) is resampled per input size.
    """

    def __init__(
        self, model_name: str, pretrained: bool = False, out_indices: Sequence[int] | None = None, **model_args
    ):
        super().__init__()
        if out_indices is not None:
            model_args["out_indices"] = tuple(out_indices)
        self.model_name = model_name
        self.model = _create_features_model(model_name, pretrained, model_args)
        info = self.model.feature_info
        self.channels: list[int] = list(info.channels())
        self.strides: list[int] = list(info.reduction())
        self.pad_multiple = max(self.strides)
        # Swin's feature wrapper reports NHWC, CNNs and forward_intermediates wrappers NCHW.
        self.channels_last_output = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        self._fixed_pos_embed = _find_fixed_pos_embed(self.model, model_args)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        height, width = images.shape[-2:]
        pad_h = -height % self.pad_multiple
        pad_w = -width % self.pad_multiple
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        features = self._run(images)
        out = []
        for feature, stride in zip(features, self.strides):
            if self.channels_last_output:
                feature = feature.permute(0, 3, 1, 2)
            out.append(feature[..., : math.ceil(height / stride), : math.ceil(width / stride)].contiguous())
        return out

    def _run(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self._fixed_pos_embed is None:
            return self.model(images)
        name, pos_stride = self._fixed_pos_embed
        pos_embed = self.model.get_parameter(name)
        grid = (images.shape[-2] // pos_stride, images.shape[-1] // pos_stride)
        if tuple(pos_embed.shape[1:3]) == grid:
            return self.model(images)
        from timm.layers import resample_abs_pos_embed_nhwc

        # Resampled for this call only (gradients reach the stored embedding); weights stay at their trained size.
        resampled = resample_abs_pos_embed_nhwc(pos_embed, list(grid))
        return functional_call(self.model, {name: resampled}, (images,), strict=False)


def _create_features_model(model_name: str, pretrained: bool, model_args: dict) -> nn.Module:
    import timm

    args = dict(model_args, features_only=True)
    try:
        try:
            return timm.create_model(model_name, pretrained=pretrained, **dict(args, dynamic_img_size=True))
        except TypeError as exc:
            if "dynamic_img_size" not in str(exc):
                raise
            return timm.create_model(model_name, pretrained=pretrained, **args)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(
                f"backbone 'timm': unknown model_name {model_name!r}; list the names with timm.list_models('pattern*')"
            ) from None
        if pretrained:
            raise _pretrained_error(model_name, exc) from None
        raise
    except (OSError, ValueError) as exc:
        if pretrained:
            raise _pretrained_error(model_name, exc) from None
        raise


def _pretrained_error(model_name: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"pretrained weights for {model_name} could not be loaded: {type(exc).__name__}: {exc}; "
        "set pretrained: false (and load trained weights with the model), or make the weights available "
        "offline (download them once into the Hugging Face cache, or pass "
        "pretrained_cfg_overlay: {file: path/to/weights.safetensors})"
    )


def _find_fixed_pos_embed(model: nn.Module, model_args: dict) -> tuple[str, int] | None:
    """``(parameter name, stride)`` of a fixed-size NHWC position embedding (VOLO), else ``None``."""
    for name, param in model.named_parameters():
        if name.rsplit(".", 1)[-1] != "pos_embed" or param.dim() != 4:
            continue
        img_size = model_args.get("img_size") or model.pretrained_cfg["input_size"][-2:]
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        return name, img_size[0] // param.shape[1]
    return None
