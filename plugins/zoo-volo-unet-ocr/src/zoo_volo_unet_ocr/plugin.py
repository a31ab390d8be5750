"""The hooks of zoo-volo-unet-ocr; the parts live beside this module."""

from zoo_core import hookimpl


@hookimpl
def zoo_backbones():
    from .backbone import VoloUNet

    return {"volo-unet": VoloUNet}
