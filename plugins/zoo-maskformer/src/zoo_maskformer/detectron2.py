"""The zoo MaskFormer as a detectron2 meta-architecture, ``ZooMaskFormer`` (needs detectron2).

Importing this module registers ``ZooMaskFormer`` in detectron2's ``META_ARCH_REGISTRY``;
:func:`add_maskformer_config` adds the config keys of the official MaskFormer project that
describe the model (``MODEL.MASK_FORMER.*``, ``MODEL.SEM_SEG_HEAD.MASK_DIM``,
``MODEL.SWIN.*``), with the official defaults, so an official config file merges::

    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from zoo_maskformer.detectron2 import add_maskformer_config

    cfg = get_cfg()
    add_maskformer_config(cfg)
    cfg.merge_from_file("maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml")
    cfg.MODEL.META_ARCHITECTURE = "ZooMaskFormer"
    model = build_model(cfg)

In training mode ``model(batched_inputs)`` takes detectron2's semantic-segmentation inputs
(``image``, ``sem_seg``) and returns ``{"loss_maskformer": ...}`` (the zoo ``maskformer``
loss, weighted by ``MODEL.MASK_FORMER.*_WEIGHT``); in eval mode it returns
``[{"sem_seg": (K, height, width)}]`` exactly as the official ``MaskFormer`` does (images
padded to ``SIZE_DIVISIBILITY``; mask logits upsampled to the padded size, cropped, then
``softmax(class)[:-1] . sigmoid(masks)``, resized to ``height`` x ``width``).
``model.segmentor`` is the zoo segmentor (``zoo_core.model_dir`` saves and loads its weights).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from zoo_core.errors import ConfigError
from zoo_core.interfaces import IGNORE_INDEX

__all__ = ["ZooMaskFormer", "add_maskformer_config", "model_config_from_cfg"]


def add_maskformer_config(cfg: CfgNode) -> None:
    """Add the official MaskFormer project's model keys (and their defaults) to ``cfg``, in place."""
    mf = cfg.MODEL.MASK_FORMER = CfgNode()
    mf.DEEP_SUPERVISION = True
    mf.NO_OBJECT_WEIGHT = 0.1
    mf.DICE_WEIGHT = 1.0
    mf.MASK_WEIGHT = 20.0
    mf.NHEADS = 8
    mf.DROPOUT = 0.1
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0
    mf.DEC_LAYERS = 6
    mf.PRE_NORM = False
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.TRANSFORMER_IN_FEATURE = "res5"
    mf.ENFORCE_INPUT_PROJ = False
    mf.SIZE_DIVISIBILITY = 32
    mf.TEST = CfgNode()
    mf.TEST.PANOPTIC_ON = False
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    head = cfg.MODEL.SEM_SEG_HEAD
    head.MASK_DIM = 256
    head.TRANSFORMER_ENC_LAYERS = 0
    head.PIXEL_DECODER_NAME = "BasePixelDecoder"
    head.NORM = "GN"
    head.CONVS_DIM = 256
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    swin = cfg.MODEL.SWIN = CfgNode()
    swin.PRETRAIN_IMG_SIZE = 224
    swin.PATCH_SIZE = 4
    swin.EMBED_DIM = 96
    swin.DEPTHS = [2, 2, 6, 2]
    swin.NUM_HEADS = [3, 6, 12, 24]
    swin.WINDOW_SIZE = 7
    swin.MLP_RATIO = 4.0
    swin.QKV_BIAS = True
    swin.QK_SCALE = None
    swin.DROP_RATE = 0.0
    swin.ATTN_DROP_RATE = 0.0
    swin.DROP_PATH_RATE = 0.3
    swin.APE = False
    swin.PATCH_NORM = True
    swin.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # the official dataset mappers' keys, so an official config file merges
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1


# keys whose other values describe parts the zoo model does not have
_FIXED = {
    "MODEL.MASK_FORMER.ENC_LAYERS": 0,
    "MODEL.MASK_FORMER.PRE_NORM": False,
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5",
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": False,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 0,
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.SWIN.QKV_BIAS": True,
    "MODEL.SWIN.QK_SCALE": None,
    "MODEL.SWIN.DROP_RATE": 0.0,
    "MODEL.SWIN.ATTN_DROP_RATE": 0.0,
    "MODEL.SWIN.APE": False,
    "MODEL.SWIN.PATCH_NORM": True,
}


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def model_config_from_cfg(cfg: CfgNode) -> dict[str, Any]:
    """The zoo model config (a ``ModelSpec`` mapping) of ``cfg``; a ``ConfigError`` names an unsupported key."""
    if "MASK_FORMER" not in cfg.MODEL or "SWIN" not in cfg.MODEL:
        raise ConfigError(
            "the config has no MODEL.MASK_FORMER / MODEL.SWIN keys; call add_maskformer_config(cfg) first"
        )
    for key, value in _FIXED.items():
        if _get(cfg, key) != value:
            raise ConfigError(f"{key} is {_get(cfg, key)!r}; ZooMaskFormer supports only {value!r}")
    if list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES) != ["res2", "res3", "res4", "res5"]:
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.IN_FEATURES is {list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)}; "
            "ZooMaskFormer reads res2..res5"
        )
    swin, mf, head = cfg.MODEL.SWIN, cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD
    return {
        "num_classes": head.NUM_CLASSES,
        "size_divisibility": mf.SIZE_DIVISIBILITY,
        "backbone": {
            "type": "maskformer-swin",
            "args": {
                "embed_dim": swin.EMBED_DIM,
                "depths": list(swin.DEPTHS),
                "num_heads": list(swin.NUM_HEADS),
                "window_size": swin.WINDOW_SIZE,
                "mlp_ratio": swin.MLP_RATIO,
                "drop_path_rate": swin.DROP_PATH_RATE,
                "patch_size": swin.PATCH_SIZE,
            },
        },
        "heads": [
            {
                "type": "maskformer",
                "args": {
                    "conv_dim": head.CONVS_DIM,
                    "mask_dim": head.MASK_DIM,
                    "hidden_dim": mf.HIDDEN_DIM,
                    "num_queries": mf.NUM_OBJECT_QUERIES,
                    "nheads": mf.NHEADS,
                    "dim_feedforward": mf.DIM_FEEDFORWARD,
                    "dec_layers": mf.DEC_LAYERS,
                    "dropout": mf.DROPOUT,
                    "enforce_input_proj": mf.ENFORCE_INPUT_PROJ,
                },
            }
        ],
    }


@META_ARCH_REGISTRY.register()
class ZooMaskFormer(nn.Module):
    """The zoo ``maskformer`` model (Swin backbone) behind detectron2's meta-architecture interface."""

    def __init__(self, cfg: CfgNode):
        super().__init__()
        from zoo_core.model_dir import build_segmentor

        from .loss import MaskFormerLoss

        self.model_config = model_config_from_cfg(cfg)
        self.segmentor = build_segmentor(self.model_config)
        mf = cfg.MODEL.MASK_FORMER
        self.criterion = MaskFormerLoss(
            num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            mask_weight=mf.MASK_WEIGHT,
            dice_weight=mf.DICE_WEIGHT,
            no_object_weight=mf.NO_OBJECT_WEIGHT,
            deep_supervision=mf.DEEP_SUPERVISION,
        )
        self.size_divisibility = mf.SIZE_DIVISIBILITY
        self.ignore_value = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), persistent=False)
        self.to(torch.device(cfg.MODEL.DEVICE))

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        output = self.segmentor(images.tensor)[-1]
        if self.training:
            padded = images.tensor.shape[-2:]
            targets = torch.full((len(batched_inputs), *padded), IGNORE_INDEX, dtype=torch.long, device=self.device)
            for i, x in enumerate(batched_inputs):
                labels = x["sem_seg"].to(self.device).long()
                labels[labels == self.ignore_value] = IGNORE_INDEX
                targets[i, : labels.shape[0], : labels.shape[1]] = labels
            return {"loss_maskformer": self.criterion(output, targets)}
        scores = output.to_scores(tuple(images.tensor.shape[-2:]))  # mask logits at the padded size, then sigmoid
        results = []
        for score, x, (h, w) in zip(scores, batched_inputs, images.image_sizes):
            height, width = x.get("height", h), x.get("width", w)
            score = score[:, :h, :w]
            if (height, width) != (h, w):
                score = F.interpolate(score[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            results.append({"sem_seg": score})
        return results
