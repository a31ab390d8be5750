"""The hooks of zoo-maskformer; the parts live beside this module."""

from zoo_core import hookimpl, lazy


@hookimpl
def zoo_backbones():
    return {"maskformer-swin": lazy("zoo_maskformer.swin:MaskFormerSwin")}


@hookimpl
def zoo_heads():
    return {"maskformer": lazy("zoo_maskformer.head:MaskFormerHead")}  # imported when a model is built


@hookimpl
def zoo_losses():
    return {"maskformer": lazy("zoo_maskformer.loss:MaskFormerLoss")}


@hookimpl
def zoo_commands():
    from .command import maskformer_group

    return [maskformer_group]
