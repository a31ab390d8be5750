"""The hooks of zoo-swin-ocr; the parts live beside this module."""

from zoo_core import hookimpl, lazy


@hookimpl
def zoo_backbones():
    return {"swin": lazy("zoo_swin_ocr.backbone:SwinBackbone")}  # imported when a model is built


@hookimpl
def zoo_commands():
    from .command import deepen_command

    return [deepen_command]
