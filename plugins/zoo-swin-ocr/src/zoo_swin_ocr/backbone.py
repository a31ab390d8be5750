"""The ``swin`` backbone: a timm Swin Transformer from a named preset, at strides 8, 16 and 32."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo_core.errors import ConfigError
from zoo_core.nn import TimmBackbone

from .presets import get_preset


def check_depths(depths: Any, where: str = "backbone 'swin' depths") -> tuple[int, ...]:
    """``depths`` as a tuple of four positive ints, or a :class:`ConfigError` naming ``where``."""
    if (
        not isinstance(depths, (list, tuple))
        or len(depths) != 4
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in depths)
    ):
        raise ConfigError(
            f"{where} must be four positive integers (one per Swin stage), e.g. [2, 2, 18, 2]; got {depths!r}"
        )
    return tuple(depths)


def backbone_args(
    preset: str = "swin-l",
    depths: Sequence[int] | None = None,
    window_size: int | None = None,
    drop_path_rate: float | None = None,
    img_size: int | Sequence[int] | None = None,
) -> dict[str, Any]:
    """The ``timm.create_model`` arguments of ``preset`` with the given overrides (``model_name`` included)."""
    spec = get_preset(preset)
    args: dict[str, Any] = {
        "model_name": spec.model_name,
        "embed_dim": spec.embed_dim,
        "depths": spec.depths if depths is None else check_depths(depths),
        "num_heads": spec.num_heads,
        "window_size": spec.window_size,
        "drop_path_rate": spec.drop_path_rate if drop_path_rate is None else drop_path_rate,
        # mmsegmentation's Swin: every other block shifts its windows, even where a map is smaller than one
        # window; timm would otherwise drop the shift where the map at the *configured* img_size fits a window.
        "always_partition": True,
    }
    if window_size is not None:
        if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 1:
            raise ConfigError(f"backbone 'swin' window_size must be a positive integer, got {window_size!r}")
        args["window_size"] = window_size
    if not isinstance(args["drop_path_rate"], (int, float)) or not 0 <= args["drop_path_rate"] < 1:
        raise ConfigError(f"backbone 'swin' drop_path_rate must be in [0, 1), got {args['drop_path_rate']!r}")
    if img_size is not None:
        args["img_size"] = img_size if isinstance(img_size, int) else tuple(img_size)
    return args


class SwinBackbone(TimmBackbone):
    """Swin Transformer (timm) from a preset: strides 8, 16, 32 (swin-l, swin-mini...) or 4 to 32 (swin-l-uper...).

    ``preset`` fixes the architecture and the stages returned (see :data:`zoo_swin_ocr.presets.PRESETS`);
    the UperNet presets also layer-normalise each output (``out_norms``), as mmsegmentation's Swin does;
    ``depths``, ``window_size``, ``drop_path_rate`` and ``img_size`` override it. Any input
    size is accepted (the windows and masks follow the input). ``pretrained`` loads timm's
    ImageNet-22k weights (``swin-l`` only); offline, point timm at a local file with
    ``pretrained_cfg_overlay: {file: path/to/model.safetensors}``.
    """

    def __init__(
        self,
        preset: str = "swin-l",
        pretrained: bool = False,
        depths: Sequence[int] | None = None,
        window_size: int | None = None,
        drop_path_rate: float | None = None,
        img_size: int | Sequence[int] | None = None,
        pretrained_cfg_overlay: dict[str, Any] | None = None,
    ):
        args = backbone_args(preset, depths, window_size, drop_path_rate, img_size)
        spec = get_preset(preset)
        if pretrained and not (
            spec.pretrainable and args["depths"] == spec.depths and args["window_size"] == spec.window_size
        ):
            raise ConfigError(
                f"backbone 'swin': ImageNet weights exist for swin-l's own architecture only (depths "
                f"{list(get_preset('swin-l').depths)}, window 12), not for preset {preset!r} with depths "
                f"{list(args['depths'])}, window {args['window_size']}; train swin-l with pretrained: true, "
                "then add the blocks with `zoo deepen` as the report does"
            )
        if pretrained_cfg_overlay is not None:
            args["pretrained_cfg_overlay"] = dict(pretrained_cfg_overlay)
        model_name = args.pop("model_name")
        super().__init__(model_name, pretrained=pretrained, out_indices=spec.out_indices, **args)
        self.preset = preset
        self.depths: tuple[int, ...] = tuple(args["depths"])
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels) if spec.output_norms else None

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = super().forward(images)
        if self.out_norms is None:
            return features
        # LayerNorm over the channels of each pixel: NCHW -> NHWC and back
        return [
            norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous() for norm, x in zip(self.out_norms, features)
        ]
