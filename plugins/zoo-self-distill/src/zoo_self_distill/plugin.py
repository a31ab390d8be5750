"""The hooks of zoo-self-distill; the loss lives beside this module."""

from zoo_core import hookimpl, lazy


@hookimpl
def zoo_losses():
    return {"self-distill": lazy("zoo_self_distill.loss:SelfDistillLoss")}
