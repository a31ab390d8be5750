"""Cross-entropy, the plain seed loss."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..errors import DataError
from ..interfaces import IGNORE_INDEX, HeadOutput, LossContext, MaskClassification, pixel_scores


class CrossEntropyLoss:
    """Pixel cross-entropy, mean over labelled pixels, with optional class weights.

    Called as ``loss(output, target, context)``: ``output`` is any head output (logits are
    upsampled bilinearly to the target's size; mask-classification scores are normalised
    to probabilities), ``target`` the ``(N, H, W)`` train ids with ``ignore_index`` for void.
    With ``class_weight`` the mean is weighted as in ``torch.nn.functional.cross_entropy``.
    A batch without labelled pixels gives 0 (not NaN). The result is scaled by ``loss_weight``.
    """

    def __init__(self, class_weight: Optional[Sequence[float]] = None, ignore_index: int = IGNORE_INDEX,
                 loss_weight: float = 1.0):
        self.class_weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float32)
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight

    def __call__(self, output: HeadOutput, target: torch.Tensor, context: Optional[LossContext] = None) -> torch.Tensor:
        scores = pixel_scores(output).float()
        if scores.shape[2:] != target.shape[-2:]:
            scores = F.interpolate(scores, size=target.shape[-2:], mode="bilinear", align_corners=False)
        num_classes = scores.shape[1]
        if self.class_weight is not None and len(self.class_weight) != num_classes:
            raise DataError(f"ce loss: class_weight has {len(self.class_weight)} entries but the head predicts "
                            f"{num_classes} classes; give one weight per class")
        labelled = target != self.ignore_index
        if not labelled.any():
            return scores.sum() * 0.0  # keeps the graph, so every head still gets a (zero) gradient
        if int(target[labelled].max()) >= num_classes or int(target[labelled].min()) < 0:
            raise DataError(f"ce loss: target holds ids outside 0..{num_classes - 1} besides ignore_index "
                            f"{self.ignore_index}; check the dataset's label remapping")
        weight = None if self.class_weight is None else self.class_weight.to(scores.device)
        if isinstance(output, MaskClassification):
            probs = scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)
            loss = F.nll_loss(probs.clamp_min(1e-12).log(), target, weight=weight, ignore_index=self.ignore_index)
        else:
            loss = F.cross_entropy(scores, target, weight=weight, ignore_index=self.ignore_index)
        return self.loss_weight * loss
