"""Building blocks for plugins: the parts of the core's own components that a new one reuses.

Public (see ``docs/api.md``): a plugin imports these from here, never from
``zoo_core.components``, whose layout may change.

- :class:`ConvBNReLU`: conv (no bias) + BatchNorm + ReLU, with mmsegmentation's parameter
  names (``conv``, ``bn``), so mmseg weights convert by key.
- :func:`resize_concat` and :data:`INPUT_TRANSFORMS`: the input transforms a decode head
  applies to the backbone's maps (``input_transform: resize_concat``).
- :class:`TimmBackbone`: any timm model as a feature pyramid for any input size; subclass
  it for a backbone with presets (``zoo_swin_ocr.backbone.SwinBackbone``).
- :class:`BaseDecodeHead`, :class:`FCNHead`, :class:`OCRHead`, :class:`UPerHead`: the decode heads; subclass
  ``BaseDecodeHead`` for a new head (it selects and transforms the inputs and classifies).
- :class:`Segmentor`: a backbone and a cascade of heads, as ``zoo_core.model_dir.build_segmentor``
  assembles them.
"""

from __future__ import annotations

from .components.backbones import TimmBackbone
from .components.heads import INPUT_TRANSFORMS, BaseDecodeHead, ConvBNReLU, FCNHead, OCRHead, UPerHead, resize_concat
from .components.segmentor import Segmentor

__all__ = [
    "INPUT_TRANSFORMS",
    "BaseDecodeHead",
    "ConvBNReLU",
    "FCNHead",
    "OCRHead",
    "Segmentor",
    "TimmBackbone",
    "UPerHead",
    "resize_concat",
]
