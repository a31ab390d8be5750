"""The core's own components, registered through the same hooks a third party uses.

Each factory is a :func:`~zoo_core.catalog.lazy` reference: listing them imports no component module.
"""

from __future__ import annotations

from .catalog import lazy
from .hookspecs import hookimpl

_COMPONENTS = "zoo_core.components"


@hookimpl
def zoo_backbones():
    return {"timm": lazy(f"{_COMPONENTS}.backbones:TimmBackbone")}


@hookimpl
def zoo_heads():
    return {
        "fcn": lazy(f"{_COMPONENTS}.heads:FCNHead"),
        "ocr": lazy(f"{_COMPONENTS}.heads:OCRHead"),
        "uper": lazy(f"{_COMPONENTS}.heads:UPerHead"),
    }


@hookimpl
def zoo_losses():
    return {
        "ce": lazy(f"{_COMPONENTS}.losses:CrossEntropyLoss"),
        "ohem-ce": lazy(f"{_COMPONENTS}.losses:OhemCrossEntropyLoss"),
        "pixel-distribution": lazy(f"{_COMPONENTS}.losses:PixelDistributionLoss"),
        "confusion-focal": lazy(f"{_COMPONENTS}.losses:ConfusionFocalLoss"),
    }


@hookimpl
def zoo_remappers():
    return {
        "vspw": lazy(f"{_COMPONENTS}.remappers:VSPWRemapper"),
        "coco-stuff": lazy(f"{_COMPONENTS}.remappers:COCOStuffRemapper"),
        "ade20k": lazy(f"{_COMPONENTS}.remappers:ADE20KRemapper"),
        "cityscapes": lazy(f"{_COMPONENTS}.remappers:CityscapesRemapper"),
    }


@hookimpl
def zoo_tta_policies():
    return {
        "identity": lazy(f"{_COMPONENTS}.tta:IdentityTTA"),
        "flip": lazy(f"{_COMPONENTS}.tta:FlipTTA"),
        "multiscale-flip": lazy(f"{_COMPONENTS}.tta:MultiScaleFlipTTA"),
        "resize-flip": lazy(f"{_COMPONENTS}.tta:ResizeFlipTTA"),
        "slide": lazy(f"{_COMPONENTS}.tta:SlideTTA"),
    }


@hookimpl
def zoo_ensemblers():
    return {
        "mean": lazy(f"{_COMPONENTS}.ensemblers:MeanEnsembler"),
        "weighted": lazy(f"{_COMPONENTS}.ensemblers:WeightedEnsembler"),
    }
