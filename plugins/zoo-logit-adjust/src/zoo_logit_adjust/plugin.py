"""The hooks of zoo-logit-adjust; the parts live beside this module."""

from zoo_core import hookimpl, lazy


@hookimpl
def zoo_heads():
    return {"logit-adjust": lazy("zoo_logit_adjust.head:LogitAdjustedHead")}


@hookimpl
def zoo_tta_policies():
    return {"logit-adjust": lazy("zoo_logit_adjust.tta:LogitAdjustTTA")}
