"""The ``self-distill`` loss: a base loss plus lambda * T^2 * KL(teacher || student) over the labelled pixels.

The 5th-place report (3.2) trains a model, freezes it as the teacher, and trains a student
of the same architecture with "the original cross entropy loss" plus a KL divergence between
the teacher's and the student's predictions as a regulariser. It gives neither the weight
nor the temperature: the defaults (``distill_weight`` 1, ``temperature`` 1) are Hinton et
al.'s plain form, with the usual ``T^2`` that keeps the gradient's scale when T changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from zoo_core.errors import ConfigError, DataError
from zoo_core.interfaces import IGNORE_INDEX, BindContext, HeadOutput, LossContext, MaskClassification, pixel_scores
from zoo_core.model_dir import find_component


def log_probabilities(output: HeadOutput, size: tuple[int, int]) -> torch.Tensor:
    """Float32 per-pixel class log-probabilities ``(N, C, H, W)`` at ``size`` (call with autocast off).

    Logits are resized bilinearly, then log-softmaxed; a :class:`MaskClassification`'s
    per-pixel semantic scores (``sum_q softmax(class) * sigmoid(mask)``) are resized,
    normalised over the classes and logged, as the core's losses read them.
    """
    scores = pixel_scores(output).float()
    if tuple(scores.shape[2:]) != tuple(size):
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    if isinstance(output, MaskClassification):
        return (scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)).clamp_min(1e-12).log()
    return scores.log_softmax(dim=1)


def distillation_kl(
    student: torch.Tensor, teacher: torch.Tensor, labelled: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``mean over labelled pixels of KL(softmax(t / T) || softmax(s / T))`` from log-probabilities ``(N, C, H, W)``.

    Tempering log-probabilities equals tempering the logits they came from: ``log_softmax(z) / T``
    differs from ``z / T`` by a per-pixel constant, which the softmax removes.
    """
    log_s = (student / temperature).log_softmax(dim=1)
    log_t = (teacher / temperature).log_softmax(dim=1)
    per_pixel = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    return per_pixel[labelled].mean()


class SelfDistillLoss:
    """A base loss (ce) plus lambda * T^2 * KL(teacher || student) over labelled pixels (5th place, 3.2).

    ``teacher``: the frozen teacher, a registry card (``card:NAME``) or a model directory,
    as ``models[].weights`` takes them; ``zoo train`` loads it once, checks that it predicts
    the student's classes, and runs it without gradients on every micro-batch's augmented
    images; every head of the student is distilled towards the teacher's prediction (its
    last head). ``distill_weight`` is lambda, ``temperature`` is T (both 1 by default; the
    report gives neither). ``base`` is the supervised loss as ``train.loss`` would write it
    (default ``{type: ce}``; the 5th place's baseline trains with ``ohem-ce``). For
    mask-classification outputs the KL compares the per-pixel semantic scores, normalised.
    Pixels labelled ``ignore_index`` take no part; ``loss_weight`` scales the sum.
    """

    needs_teacher = True

    def __init__(
        self,
        teacher: str,
        distill_weight: float = 1.0,
        temperature: float = 1.0,
        base: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        loss_weight: float = 1.0,
    ):
        if not isinstance(teacher, str) or not teacher:
            raise ConfigError(f"self-distill loss: teacher must be a card name or a model directory, got {teacher!r}")
        for name, value, lowest in (("distill_weight", distill_weight, 0.0), ("temperature", temperature, None)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value:
                raise ConfigError(f"self-distill loss: {name} must be a number, got {value!r}")
            if (lowest is not None and value < lowest) or (lowest is None and value <= 0):
                rule = ">= 0" if lowest is not None else "> 0"
                raise ConfigError(f"self-distill loss: {name} must be {rule}, got {value!r}")
        base = {"type": "ce"} if base is None else base
        if not isinstance(base, Mapping) or not isinstance(base.get("type"), str) or set(base) - {"type", "args"}:
            raise ConfigError(f"self-distill loss: base must be a loss as {{type: NAME, args: {{...}}}}, got {base!r}")
        factory = find_component("loss", base["type"]).factory
        if getattr(factory, "needs_teacher", False):
            raise ConfigError(f"self-distill loss: base {base['type']!r} needs a teacher itself; use ce or ohem-ce")
        args = dict(base.get("args") or {})
        if num_classes is not None and "num_classes" in _parameters(factory):
            args.setdefault("num_classes", num_classes)
        self.base = factory(**args)
        self.teacher = teacher
        self.distill_weight = float(distill_weight)
        self.temperature = float(temperature)
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight

    def bind(self, context: BindContext) -> None:
        bind = getattr(self.base, "bind", None)
        if callable(bind):
            bind(context)

    def __call__(self, output: HeadOutput, target: torch.Tensor, context: LossContext | None = None) -> torch.Tensor:
        supervised = self.base(output, target, context)
        if context is None or context.teacher is None:
            raise ConfigError(
                "self-distill loss: no teacher output in the loss context; run it with zoo train, which loads "
                "the teacher named by its teacher: argument"
            )
        with torch.autocast(target.device.type, enabled=False):
            size = (int(target.shape[-2]), int(target.shape[-1]))
            student = log_probabilities(output, size)
            teacher = log_probabilities(_detached(context.teacher), size)
            if teacher.shape[1] != student.shape[1]:
                raise DataError(
                    f"self-distill loss: the teacher predicts {teacher.shape[1]} classes and the student "
                    f"{student.shape[1]}; distil from a model trained on the student's classes"
                )
            labelled = target != self.ignore_index
            if not labelled.any():
                return self.loss_weight * supervised.float() + student.sum() * 0.0
            kl = distillation_kl(student, teacher, labelled, self.temperature)
        scale = self.distill_weight * self.temperature**2
        return self.loss_weight * (supervised.float() + scale * kl)


def _detached(output: HeadOutput) -> HeadOutput:
    if isinstance(output, MaskClassification):
        return MaskClassification(output.class_logits.detach(), output.mask_logits.detach())
    return output.detach()


def _parameters(factory: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()
