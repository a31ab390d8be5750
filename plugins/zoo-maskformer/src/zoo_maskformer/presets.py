"""Named MaskFormer configurations and the model config they give.

``maskformer-swin-l`` has the sizes of the official ADE20K Swin-L config
(``configs/ade20k-150/swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml`` of the
MaskFormer repository, with its base configs): Swin-L (embed dim 192, depths 2,2,18,2,
heads 6,12,24,48, window 12, drop path 0.3, all four stages: strides 4 to 32), the pixel
decoder's conv and mask dims 256, a 6-layer transformer decoder (100 queries, hidden 256,
8 heads, feed-forward 2048, dropout 0.1, post-norm) over the stride-32 map, and
size divisibility 32. ``maskformer-mini`` has the same structure at test size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo_core.errors import ConfigError


@dataclass(frozen=True)
class MaskFormerPreset:
    """The sizes of the Swin backbone (``maskformer-swin``: all four stages, strides 4 to 32) and of the head."""

    summary: str
    backbone: dict[str, Any]  # the args of the maskformer-swin backbone
    head: dict[str, Any] = field(default_factory=dict)  # the args of the maskformer head
    size_divisibility: int = 32


PRESETS: dict[str, MaskFormerPreset] = {
    "maskformer-swin-l": MaskFormerPreset(
        summary="MaskFormer Swin-L, the official ADE20K config's sizes (the 5th-place model)",
        backbone={
            "embed_dim": 192,
            "depths": [2, 2, 18, 2],
            "num_heads": [6, 12, 24, 48],
            "window_size": 12,
            "drop_path_rate": 0.3,
        },
        head={
            "conv_dim": 256,
            "mask_dim": 256,
            "hidden_dim": 256,
            "num_queries": 100,
            "nheads": 8,
            "dim_feedforward": 2048,
            "dec_layers": 6,
            "dropout": 0.1,
        },
    ),
    # The same structure at test size: 64x96 frames in a few hundredths of a second on a CPU.
    "maskformer-mini": MaskFormerPreset(
        summary="tiny MaskFormer for tests (Swin embed 32, 2 decoder layers, 8 queries)",
        backbone={
            "embed_dim": 32,
            "depths": [2, 2, 2, 2],
            "num_heads": [1, 2, 4, 8],
            "window_size": 4,
            "drop_path_rate": 0.0,
        },
        head={
            "conv_dim": 32,
            "mask_dim": 32,
            "hidden_dim": 32,
            "num_queries": 8,
            "nheads": 2,
            "dim_feedforward": 64,
            "dec_layers": 2,
            "dropout": 0.0,
        },
    ),
}


def get_preset(name: str) -> MaskFormerPreset:
    if name not in PRESETS:
        raise ConfigError(f"unknown MaskFormer preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def model_config(preset: str = "maskformer-swin-l", num_classes: int = 124) -> dict[str, Any]:
    """The whole segmentor config (``build_segmentor`` / the pipeline's ``model:``) for ``preset``.

    ``num_classes``: 124 for VSPW, 150 for ADE20K (the official config).
    """
    spec = get_preset(preset)
    return {
        "num_classes": num_classes,
        "size_divisibility": spec.size_divisibility,
        "backbone": {"type": "maskformer-swin", "args": dict(spec.backbone)},
        "heads": [{"type": "maskformer", "args": dict(spec.head)}],
    }
