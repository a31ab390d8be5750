"""``zoo_volo``: timm's VOLO with its architecture given as arguments, registered as a timm model.

timm's VOLO entry points (``volo_d1_224`` ... ``volo_d5_512``) fix ``layers``, ``embed_dims``
and ``num_heads`` and refuse overrides, so the small test preset needs an entry point of its
own. It builds timm's own ``VOLO`` class the way ``timm.models.volo`` does (same features
wrapper: ``forward_intermediates``), so everything downstream is identical to ``volo_d5_512``.
Registered when this module is first imported, i.e. when a ``volo-unet`` backbone is built.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import build_model_with_cfg, register_model
from timm.models.volo import VOLO

MODEL_NAME = "zoo_volo"

# No weights: this is a test-size architecture. input_size is the default img_size below.
default_cfgs = {
    MODEL_NAME: {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "fixed_input_size": True,
        "first_conv": "patch_embed.conv.0",
        "classifier": ("head", "aux_head"),
        "license": "apache-2.0",
    }
}


def zoo_volo(pretrained: bool = False, **kwargs: Any) -> VOLO:
    """VOLO whose ``layers``, ``embed_dims`` and ``num_heads`` (and any other VOLO argument) are given; no weights."""
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        VOLO, MODEL_NAME, pretrained, feature_cfg={"out_indices": out_indices, "feature_cls": "getter"}, **kwargs
    )


if not timm.is_model(MODEL_NAME):
    register_model(zoo_volo)
