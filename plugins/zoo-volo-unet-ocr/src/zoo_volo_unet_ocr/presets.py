"""Named VOLO + U-Net + OCR configurations with the 3rd-place report's sizes, and the model config they give.

Report 3.3: VOLO-D5 as encoder, a U-Net restoring the resolution "from 32x32 to 256x256"
(on 512x512 crops: stride 16 to stride 2), then OCRNet. Report 3.5: the U-Net combines the
last three output maps; OCR "with almost the same parameters as Swin": pixel representation
1024, object context 512.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo_core.errors import ConfigError

FCN_LOSS_WEIGHT = 0.4
"""The auxiliary FCN loss weight: mmsegmentation's OCRNet configs (the report is silent)."""


@dataclass(frozen=True)
class VoloPreset:
    """A VOLO encoder (timm), its U-Net neck and the widths of the FCN + OCR heads."""

    model_name: str  # the timm architecture, and the name of its pretrained weights
    img_size: int  # the size the fixed position embedding is trained for
    drop_path_rate: float
    fuse_channels: int  # the 1x1 fusion of the last three (stride-16) maps
    decoder_channels: tuple[int, ...]  # one U-Net block per 2x upsampling (strides 8, 4, 2), down to out_stride
    out_stride: int
    ocr_pixel_channels: int  # OCR pixel representation ("channels" of the ocr head)
    ocr_mid_channels: int  # OCR object context block ("ocr_channels")
    pretrainable: bool  # timm has ImageNet weights for model_name
    summary: str
    arch: dict[str, Any] = field(default_factory=dict)  # architecture arguments for timm (zoo_volo only)


PRESETS: dict[str, VoloPreset] = {
    "volo-d5": VoloPreset(
        model_name="volo_d5_512",
        img_size=512,
        # Not in the report: the value of mmsegmentation's Swin-L configs, as for the Swin preset.
        drop_path_rate=0.3,
        # The report gives no U-Net widths: D5's stride-16 width, then halved at each 2x upsampling.
        fuse_channels=768,
        decoder_channels=(384, 192, 96),
        out_stride=2,
        ocr_pixel_channels=1024,
        ocr_mid_channels=512,
        pretrainable=True,
        summary="VOLO-D5 (512 geometry) + U-Net to stride 2 + OCR 1024/512, the report's VOLO model",
    ),
    # A stand-in with the same structure for tests and smoke runs: 64x96 frames in well under a second.
    "volo-mini": VoloPreset(
        model_name="zoo_volo",
        img_size=64,
        drop_path_rate=0.0,
        fuse_channels=64,
        decoder_channels=(32, 16, 16),
        out_stride=2,
        ocr_pixel_channels=32,
        ocr_mid_channels=16,
        pretrainable=False,
        summary="tiny VOLO for tests (layers 1,1,1,1, dims 32/64, img_size 64)",
        arch={
            "layers": (1, 1, 1, 1),
            "embed_dims": (32, 64, 64, 64),
            "num_heads": (1, 2, 2, 2),
            "stem_hidden_dim": 16,
            "mlp_ratio": 2.0,
        },
    ),
}


def get_preset(name: str) -> VoloPreset:
    if name not in PRESETS:
        raise ConfigError(f"backbone 'volo-unet': unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def model_config(preset: str = "volo-d5", num_classes: int = 124) -> dict[str, Any]:
    """The whole segmentor config (``build_segmentor`` / the pipeline's ``model:``) for ``preset``.

    Both heads read the U-Net's finest map (``in_index: 0``, stride 2 for the presets), as
    the report's Swin model feeds one map to both and the VOLO model follows it:

    - ``fcn``: the coarse soft segmentation feeding OCR, auxiliary loss weight 0.4. One 1x1
      conv-BN-ReLU keeping the input width, no input concat, no dropout: the report gives no
      size; these are mmsegmentation's OCRNet configs.
    - ``ocr``: pixel representation ``channels`` 1024, object context ``ocr_channels`` 512
      (report 3.5, "almost the same parameters as Swin"), no dropout.
    """
    spec = get_preset(preset)
    unet_channels = spec.decoder_channels[-1] if spec.decoder_channels else spec.fuse_channels
    return {
        "num_classes": num_classes,
        "backbone": {"type": "volo-unet", "args": {"preset": preset}},
        "heads": [
            {
                "type": "fcn",
                "args": {
                    "in_index": 0,
                    "dropout_ratio": 0.0,
                    "channels": unet_channels,
                    "num_convs": 1,
                    "kernel_size": 1,
                    "concat_input": False,
                    "loss_weight": FCN_LOSS_WEIGHT,
                },
            },
            {
                "type": "ocr",
                "args": {
                    "in_index": 0,
                    "dropout_ratio": 0.0,
                    "channels": spec.ocr_pixel_channels,
                    "ocr_channels": spec.ocr_mid_channels,
                },
            },
        ],
    }
