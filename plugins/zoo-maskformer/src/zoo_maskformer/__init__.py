"""MaskFormer for zoo: the ``maskformer`` head and loss, and the model presets."""

from .presets import PRESETS, model_config

__all__ = ["PRESETS", "model_config"]
