"""The hooks of zoo-swin-ocr; the parts live beside this module."""

from zoo_core import hookimpl


@hookimpl
def zoo_backbones():
    from .backbone import SwinBackbone

    return {"swin": SwinBackbone}


@hookimpl
def zoo_commands():
    from .command import deepen_command

    return [deepen_command]
