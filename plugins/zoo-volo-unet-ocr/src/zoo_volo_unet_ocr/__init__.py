"""VOLO-D5 + U-Net + OCRNet (VSPW 3rd place, report sections 3.3 and 3.5): the ``volo-unet`` backbone, its presets."""

from .presets import PRESETS, model_config

__all__ = ["PRESETS", "model_config"]
