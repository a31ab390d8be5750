"""The core's own components, registered through the same hooks a third party uses."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def zoo_backbones():
    from .components.backbones import TimmBackbone

    return {"timm": TimmBackbone}


@hookimpl
def zoo_heads():
    from .components.heads import FCNHead, OCRHead

    return {"fcn": FCNHead, "ocr": OCRHead}


@hookimpl
def zoo_losses():
    from .components.losses import ConfusionFocalLoss, CrossEntropyLoss, OhemCrossEntropyLoss, PixelDistributionLoss

    return {"ce": CrossEntropyLoss, "ohem-ce": OhemCrossEntropyLoss, "pixel-distribution": PixelDistributionLoss,
            "confusion-focal": ConfusionFocalLoss}


@hookimpl
def zoo_remappers():
    from .components.remappers import (
        ADE20KRemapper,
        CityscapesRemapper,
        COCOStuffRemapper,
        VSPWRemapper,
    )

    return {"vspw": VSPWRemapper, "coco-stuff": COCOStuffRemapper, "ade20k": ADE20KRemapper,
            "cityscapes": CityscapesRemapper}


@hookimpl
def zoo_tta_policies():
    from .components.tta import FlipTTA, IdentityTTA, MultiScaleFlipTTA, ResizeFlipTTA

    return {"identity": IdentityTTA, "flip": FlipTTA, "multiscale-flip": MultiScaleFlipTTA, "resize-flip": ResizeFlipTTA}


@hookimpl
def zoo_ensemblers():
    from .components.ensemblers import MeanEnsembler, WeightedEnsembler

    return {"mean": MeanEnsembler, "weighted": WeightedEnsembler}
