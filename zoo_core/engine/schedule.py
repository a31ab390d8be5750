"""When things happen in a run: the learning rate of each step, the parameter groups it applies
to, and the iterations that write a checkpoint or an SWA snapshot. All are functions of the
recipe and the iteration, so a resumed run recomputes them instead of restoring them."""

from __future__ import annotations

import torch

from ..pipeline.schema import TrainSpec

# Position tables get no weight decay (mmsegmentation's Swin configs; timm's feature wrappers hide no_weight_decay()).
NO_DECAY_KEYWORDS = ("pos_embed", "relative_position_bias_table", "cls_token")


def learning_rate(spec: TrainSpec, step: int) -> float:
    """The backbone's learning rate at 0-based ``step`` (the decoder's is ``decoder_lr_mult`` times it).

    Linear warm-up from 0 over ``warmup_iters`` (step ``s`` gets ``(s + 1) / warmup`` of
    ``lr``), then ``poly`` / ``linear`` decay to ``min_lr`` at ``max_iters``, or constant.
    With SWA, steps past ``max_iters`` run in cycles of ``swa.every``: each falls linearly
    from ``swa.lr`` (first step) to ``swa.min_lr`` (last step, where the snapshot is taken).
    """
    if spec.swa is not None and step >= spec.max_iters:
        position = (step - spec.max_iters) % spec.swa.every
        fraction = position / (spec.swa.every - 1) if spec.swa.every > 1 else 1.0
        return spec.swa.lr + (spec.swa.min_lr - spec.swa.lr) * fraction
    if step < spec.warmup_iters:
        return spec.lr * (step + 1) / spec.warmup_iters
    if spec.schedule == "constant":
        return spec.lr
    span = max(1, spec.max_iters - spec.warmup_iters)
    progress = min(1.0, (step - spec.warmup_iters) / span)
    power = 1.0 if spec.schedule == "linear" else spec.power
    return spec.min_lr + (spec.lr - spec.min_lr) * (1.0 - progress) ** power


def total_iters(spec: TrainSpec) -> int:
    return spec.max_iters + (spec.swa.iters if spec.swa else 0)


def param_groups(model: torch.nn.Module, spec: TrainSpec, decay_1d: bool = False) -> list[dict]:
    """Backbone at ``lr``; the decoder (heads, and a backbone's ``neck``: newly initialised) at
    ``lr * decoder_lr_mult``. Biases, norm weights and position tables (1-D tensors and the
    names timm lists in ``no_weight_decay``) get no weight decay, as in timm and mmsegmentation."""
    backbone = model.backbone
    neck = getattr(backbone, "neck", None)
    neck_ids = {id(p) for p in neck.parameters()} if isinstance(neck, torch.nn.Module) else set()
    backbone_ids = {id(p) for p in backbone.parameters()} - neck_ids
    skip = set()  # full names of the parameters a timm model lists in no_weight_decay()
    for prefix, module in model.named_modules():
        if callable(getattr(module, "no_weight_decay", None)):
            skip |= {f"{prefix}.{name}" if prefix else name for name in module.no_weight_decay()}

    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "backbone" if id(param) in backbone_ids else "decoder"
        no_decay = not decay_1d and (param.ndim <= 1 or name in skip or any(k in name for k in NO_DECAY_KEYWORDS))
        groups.setdefault((part, no_decay), []).append(param)
    return [
        {
            "params": params,
            "name": f"{part}{'.no_decay' if no_decay else ''}",
            "lr_mult": 1.0 if part == "backbone" else spec.decoder_lr_mult,
            "weight_decay": 0.0 if no_decay else spec.weight_decay,
        }
        for (part, no_decay), params in sorted(groups.items())
    ]


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


def checkpoint_due(spec: TrainSpec, step: int) -> bool:
    """A regular checkpoint every ``checkpoint_every`` iterations before the last, and one where SWA starts."""
    regular = bool(spec.checkpoint_every) and step % spec.checkpoint_every == 0 and step < total_iters(spec)
    return regular or (spec.swa is not None and step == spec.max_iters)


def swa_snapshot_due(spec: TrainSpec, step: int) -> bool:
    """The end of an SWA cycle: its weights are averaged into the final model."""
    return spec.swa is not None and step > spec.max_iters and (step - spec.max_iters) % spec.swa.every == 0
