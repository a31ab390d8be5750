"""The hooks of zoo-volo-unet-ocr; the parts live beside this module."""

from zoo_core import hookimpl, lazy


@hookimpl
def zoo_backbones():
    return {"volo-unet": lazy("zoo_volo_unet_ocr.backbone:VoloUNet")}  # imported when a model is built
