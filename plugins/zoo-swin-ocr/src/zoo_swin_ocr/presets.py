"""Named Swin + OCR configurations with the 3rd-place report's sizes, and the model config they give.

Report 3.5: Swin-L (embed dim 192, depths 2,2,18,2, heads 6,12,24,48, window 12); the
stride 8/16/32 outputs resized to stride 8 and concatenated (2688 channels); an FCN head
for the coarse soft segmentation feeding OCR (pixel representation 1024, middle 512).
Report 4.1.1, part 2: the model is deepened to (4,6,20,4) (``zoo deepen``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo_core.errors import ConfigError

OUT_INDICES = (1, 2, 3)
"""Swin stages kept: strides 8, 16, 32. The stride-4 output is dropped, as in the report (too costly)."""

FCN_LOSS_WEIGHT = 0.4
"""The auxiliary FCN loss weight: mmsegmentation's OCRNet configs (the report is silent)."""


@dataclass(frozen=True)
class SwinPreset:
    """A Swin backbone (timm) and the widths of its FCN + OCR heads."""

    model_name: str  # the timm architecture, and the name of its pretrained weights
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    drop_path_rate: float
    ocr_pixel_channels: int  # OCR pixel representation ("channels" of the ocr head)
    ocr_mid_channels: int  # OCR object context block ("ocr_channels")
    pretrainable: bool  # the architecture equals timm's model_name, so its ImageNet weights fit
    summary: str

    @property
    def channels(self) -> list[int]:
        """Channels of the backbone's outputs (strides 8, 16, 32): the embed dim doubles per stage."""
        return [self.embed_dim * 2**i for i in OUT_INDICES]

    @property
    def concat_channels(self) -> int:
        """Channels of the stride-8 resize-concatenation the heads read (2688 for Swin-L)."""
        return sum(self.channels)


_SWIN_L = {
    "model_name": "swin_large_patch4_window12_384",
    "embed_dim": 192,
    "num_heads": (6, 12, 24, 48),
    "window_size": 12,
    "ocr_pixel_channels": 1024,
    "ocr_mid_channels": 512,
    "drop_path_rate": 0.3,
}  # mmsegmentation's Swin-B/L segmentation configs; the report does not give it
# A stand-in with the same structure for tests and smoke runs: 64x96 frames in well under a second.
_SWIN_MINI = {
    "model_name": "swin_tiny_patch4_window7_224",
    "embed_dim": 32,
    "num_heads": (1, 2, 4, 8),
    "window_size": 4,
    "ocr_pixel_channels": 64,
    "ocr_mid_channels": 32,
    "drop_path_rate": 0.0,
    "pretrainable": False,
}

PRESETS: dict[str, SwinPreset] = {
    "swin-l": SwinPreset(
        **_SWIN_L,
        depths=(2, 2, 18, 2),
        pretrainable=True,
        summary="Swin-L, the report's first model (ImageNet-22k weights available)",
    ),
    "swin-l-deep": SwinPreset(
        **_SWIN_L,
        depths=(4, 6, 20, 4),
        pretrainable=False,
        summary="Swin-L deepened to (4,6,20,4) as in the report's part 2 (zoo deepen)",
    ),
    "swin-mini": SwinPreset(**_SWIN_MINI, depths=(2, 2, 2, 2), summary="tiny Swin for tests (embed 32, window 4)"),
    "swin-mini-deep": SwinPreset(
        **_SWIN_MINI, depths=(4, 6, 4, 4), summary="swin-mini deepened like swin-l-deep (+2, +4, +2, +2 blocks)"
    ),
}


def get_preset(name: str) -> SwinPreset:
    if name not in PRESETS:
        raise ConfigError(f"backbone 'swin': unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def model_config(preset: str = "swin-l", num_classes: int = 124) -> dict[str, Any]:
    """The whole segmentor config (``build_segmentor`` / the pipeline's ``model:``) for ``preset``.

    Heads, both on the stride-8 concatenation of the three outputs:

    - ``fcn``: the coarse soft segmentation feeding OCR, auxiliary loss weight 0.4. One 1x1
      conv-BN-ReLU keeping the input width (2688 for Swin-L), no input concat, no dropout:
      the report gives no size, and these are mmsegmentation's OCRNet configs for a
      resize-concatenated input (``ocrnet_hr18``), the closest to the report's setting.
    - ``ocr``: pixel representation ``channels`` 1024, object context ``ocr_channels`` 512
      (report 3.5), no dropout (same configs).
    """
    spec = get_preset(preset)
    head_input = {"in_index": [0, 1, 2], "input_transform": "resize_concat", "dropout_ratio": 0.0}
    return {
        "num_classes": num_classes,
        "backbone": {"type": "swin", "args": {"preset": preset}},
        "heads": [
            {
                "type": "fcn",
                "args": {
                    **head_input,
                    "channels": spec.concat_channels,
                    "num_convs": 1,
                    "kernel_size": 1,
                    "concat_input": False,
                    "loss_weight": FCN_LOSS_WEIGHT,
                },
            },
            {
                "type": "ocr",
                "args": {**head_input, "channels": spec.ocr_pixel_channels, "ocr_channels": spec.ocr_mid_channels},
            },
        ],
    }
