"""Named Swin configurations with the reports' sizes, and the model config they give.

3rd place, report 3.5: Swin-L (embed dim 192, depths 2,2,18,2, heads 6,12,24,48, window 12); the
stride 8/16/32 outputs resized to stride 8 and concatenated (2688 channels); an FCN head
for the coarse soft segmentation feeding OCR (pixel representation 1024, middle 512).
Report 4.1.1, part 2: the model is deepened to (4,6,20,4) (``zoo deepen``).

5th place, Swin baseline: Swin-L with UperNet as mmsegmentation configures it
(``upernet_swin``): all four stages (strides 4 to 32), each output layer-normalised, the
``uper`` head (channels 512) and an auxiliary ``fcn`` head on stage 3 (channels 256, weight 0.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo_core.errors import ConfigError

OUT_INDICES = (1, 2, 3)
"""Swin stages kept by the OCR presets: strides 8, 16, 32; stride 4 is dropped, as in the report (too costly)."""

UPER_OUT_INDICES = (0, 1, 2, 3)
"""Swin stages kept by the UperNet presets: strides 4 to 32, the FPN's four levels."""

FCN_LOSS_WEIGHT = 0.4
"""The auxiliary FCN loss weight: mmsegmentation's OCRNet and UperNet configs (the report is silent)."""


@dataclass(frozen=True)
class SwinPreset:
    """A Swin backbone (timm), the stages it outputs, and the widths of its heads (FCN + OCR, or FCN + UperNet)."""

    model_name: str  # the timm architecture, and the name of its pretrained weights
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    drop_path_rate: float
    pretrainable: bool  # the architecture equals timm's model_name, so its ImageNet weights fit
    summary: str
    decoder: str = "ocr"  # the heads model_config builds: "ocr" (fcn + ocr) or "uper" (fcn aux + uper)
    out_indices: tuple[int, ...] = OUT_INDICES
    output_norms: bool = False  # a LayerNorm on each output, as mmsegmentation's Swin (the UperNet presets)
    ocr_pixel_channels: int = 0  # OCR pixel representation ("channels" of the ocr head)
    ocr_mid_channels: int = 0  # OCR object context block ("ocr_channels")
    uper_channels: int = 0  # UperNet's width ("channels" of the uper head)
    aux_channels: int = 0  # the auxiliary FCN head of UperNet on stage 3

    @property
    def channels(self) -> list[int]:
        """Channels of the backbone's outputs: the embed dim doubles per stage."""
        return [self.embed_dim * 2**i for i in self.out_indices]

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

# mmsegmentation's upernet_swin: the same Swin-L, heads at full width.
_UPER = {"decoder": "uper", "out_indices": UPER_OUT_INDICES, "output_norms": True}
_SWIN_L_UPER = {**{k: v for k, v in _SWIN_L.items() if not k.startswith("ocr_")}, **_UPER}
_SWIN_MINI_UPER = {**{k: v for k, v in _SWIN_MINI.items() if not k.startswith("ocr_")}, **_UPER}

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
    "swin-l-uper": SwinPreset(
        **_SWIN_L_UPER,
        depths=(2, 2, 18, 2),
        pretrainable=True,
        uper_channels=512,
        aux_channels=256,
        summary="Swin-L + UperNet, the 5th place's Swin baseline (mmsegmentation's upernet_swin)",
    ),
    "swin-mini-uper": SwinPreset(
        **_SWIN_MINI_UPER,
        depths=(2, 2, 2, 2),
        uper_channels=32,
        aux_channels=16,
        summary="tiny Swin + UperNet for tests (embed 32, window 4)",
    ),
}


def get_preset(name: str) -> SwinPreset:
    if name not in PRESETS:
        raise ConfigError(f"backbone 'swin': unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def model_config(preset: str = "swin-l", num_classes: int = 124) -> dict[str, Any]:
    """The whole segmentor config (``build_segmentor`` / the pipeline's ``model:``) for ``preset``.

    The UperNet presets (``swin-l-uper``, ``swin-mini-uper``): see :func:`uper_model_config`.
    The OCR presets' heads, both on the stride-8 concatenation of the three outputs:

    - ``fcn``: the coarse soft segmentation feeding OCR, auxiliary loss weight 0.4. One 1x1
      conv-BN-ReLU keeping the input width (2688 for Swin-L), no input concat, no dropout:
      the report gives no size, and these are mmsegmentation's OCRNet configs for a
      resize-concatenated input (``ocrnet_hr18``), the closest to the report's setting.
    - ``ocr``: pixel representation ``channels`` 1024, object context ``ocr_channels`` 512
      (report 3.5), no dropout (same configs).
    """
    spec = get_preset(preset)
    if spec.decoder == "uper":
        return uper_model_config(preset, num_classes)
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


def uper_model_config(preset: str = "swin-l-uper", num_classes: int = 124) -> dict[str, Any]:
    """Swin + UperNet as mmsegmentation's ``upernet_swin`` configs build it (the 5th place's Swin baseline).

    Heads, in cascade order (the last one predicts):

    - ``fcn``: the auxiliary head on stage 3 (``in_index`` 2, stride 16): one 3x3 conv-BN-ReLU
      of ``channels`` 256, no input concat, dropout 0.1, loss weight 0.4;
    - ``uper``: PPM (pool scales 1, 2, 3, 6) on stage 4 and an FPN over the four stages,
      ``channels`` 512, dropout 0.1, output at stride 4.
    """
    spec = get_preset(preset)
    if spec.decoder != "uper":
        raise ConfigError(
            f"preset {preset!r} is a Swin + OCR preset; the UperNet presets are: "
            f"{', '.join(name for name, p in PRESETS.items() if p.decoder == 'uper')}"
        )
    return {
        "num_classes": num_classes,
        "backbone": {"type": "swin", "args": {"preset": preset}},
        "heads": [
            {
                "type": "fcn",
                "args": {
                    "in_index": 2,
                    "channels": spec.aux_channels,
                    "num_convs": 1,
                    "concat_input": False,
                    "dropout_ratio": 0.1,
                    "loss_weight": FCN_LOSS_WEIGHT,
                },
            },
            {
                "type": "uper",
                "args": {
                    "in_index": [0, 1, 2, 3],
                    "pool_scales": [1, 2, 3, 6],
                    "channels": spec.uper_channels,
                    "dropout_ratio": 0.1,
                },
            },
        ],
    }
