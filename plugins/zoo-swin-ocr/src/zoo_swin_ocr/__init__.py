"""Swin-L + OCRNet (VSPW 3rd place, report section 3.5) and Swin-L + UperNet (5th place's baseline): the ``swin``
backbone, its presets and ``zoo deepen``."""

from .presets import PRESETS, model_config, uper_model_config

__all__ = ["PRESETS", "model_config", "uper_model_config"]
