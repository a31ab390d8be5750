"""The ``maskformer`` loss: per-class binary masks from the semantic labels, Hungarian matching, set losses.

For each image, every class present in the label map (255 aside) is one target: its class
and its binary mask. Queries and targets are matched one to one by
``scipy.optimize.linear_sum_assignment`` over the cost
``class_cost * -p(target class) + focal_cost * focal + dice_cost * dice``; then

- cross-entropy over every query's class logits, unmatched queries labelled "no object"
  (the last class), weighted ``no_object_weight`` against 1 for the real classes;
- sigmoid focal (alpha 0.25, gamma 2) and dice losses between each matched query's mask and
  its target's, summed over the matched pairs and divided by the number of target masks
  in the batch (at least 1);

total = ``class_weight`` * CE + ``mask_weight`` * focal + ``dice_weight`` * dice, on the final
layer and on every layer of ``output.aux`` (each matched on its own), summed.

Resolutions, as the paper's code: the matching costs are computed at the mask logits'
resolution, against the label map downsampled with nearest neighbours (cheap: every query
against every target); the losses at the label map's resolution, the matched mask logits
upsampled bilinearly. Pixels labelled 255 are left out of every mask cost and loss (the
paper's code counts them as background of every mask); the per-image focal term is the
mean over the labelled pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from zoo_core.errors import ConfigError, DataError
from zoo_core.interfaces import IGNORE_INDEX, LossContext, MaskClassification

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(query indices, target indices)`` of the assignment of least total ``cost`` ``(Q, T)``.

    Every target gets a query when ``Q >= T``; otherwise every query gets a target. Pairs
    are ordered by query.
    """
    rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per mask ``(M,)``: the sigmoid focal loss of logits ``(M, P)`` against 0/1 targets, averaged over ``valid``.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)``, ``p_t = p`` where the target is 1, else ``1 - p``.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    loss = alpha_t * (1 - p_t) ** FOCAL_GAMMA * ce
    return (loss * valid).sum(-1) / valid.sum(-1).clamp_min(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per mask ``(M,)``: ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` over the ``valid`` pixels."""
    prob = logits.sigmoid() * valid
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + (targets * valid).sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def matching_cost(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    classes: torch.Tensor,
    masks: torch.Tensor,
    valid: torch.Tensor,
    weights: tuple[float, float, float],
) -> torch.Tensor:
    """The ``(Q, T)`` cost of giving each query each target of one image.

    ``class_logits (Q, K + 1)``, ``mask_logits (Q, P)``, target ``classes (T,)`` and
    ``masks (T, P)`` (0/1), ``valid (P,)`` (0/1: the labelled pixels); ``weights`` =
    (class, focal, dice). The focal and dice costs are the losses of every pair, computed
    for all pairs at once.
    """
    class_weight, focal_weight, dice_weight = weights
    cost_class = -class_logits.softmax(-1)[:, classes]
    # focal: the loss of each pixel if its target were 1 (pos) or 0 (neg), summed over the target's pixels
    prob = mask_logits.sigmoid()
    pos = FOCAL_ALPHA * (1 - prob) ** FOCAL_GAMMA * F.softplus(-mask_logits) * valid
    neg = (1 - FOCAL_ALPHA) * prob**FOCAL_GAMMA * F.softplus(mask_logits) * valid
    cost_focal = (pos @ masks.T + neg @ (1 - masks).T) / valid.sum().clamp_min(1)
    prob = prob * valid
    numerator = 2 * prob @ masks.T
    denominator = prob.sum(-1)[:, None] + (masks * valid).sum(-1)[None, :]
    cost_dice = 1 - (numerator + 1) / (denominator + 1)
    return class_weight * cost_class + focal_weight * cost_focal + dice_weight * cost_dice


class MaskFormerLoss:
    """MaskFormer's set loss: Hungarian matching, cross-entropy + focal + dice on every decoder layer.

    Weights of the official config: ``class_weight`` 1, ``mask_weight`` 20 (focal),
    ``dice_weight`` 1, ``no_object_weight`` 0.1 (the cross-entropy weight of "no object");
    the matching costs use the same class, focal and dice weights. ``deep_supervision``:
    also supervise every layer in ``output.aux``.
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        no_object_weight: float = 0.1,
        deep_supervision: bool = True,
    ):
        for name, value in (
            ("class_weight", class_weight),
            ("mask_weight", mask_weight),
            ("dice_weight", dice_weight),
            ("no_object_weight", no_object_weight),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"loss 'maskformer' {name} must be a number >= 0, got {value!r}")
        self.num_classes = num_classes
        self.weights = (float(class_weight), float(mask_weight), float(dice_weight))
        self.no_object_weight = float(no_object_weight)
        self.deep_supervision = deep_supervision

    def __call__(
        self, output: MaskClassification, target: torch.Tensor, context: LossContext | None = None
    ) -> torch.Tensor:
        if not isinstance(output, MaskClassification):
            raise ConfigError(
                f"loss 'maskformer' needs a mask-classification head (such as 'maskformer'), "
                f"got {type(output).__name__} outputs; use a per-pixel loss (ce) for this head"
            )
        self._check_target(output, target)
        layers = [(output.class_logits, output.mask_logits)]
        if self.deep_supervision:
            layers += [(layer["class_logits"], layer["mask_logits"]) for layer in output.aux]
        # the targets of each image: one per class present in its label map (255 aside), in increasing order
        present = [torch.unique(labels[labels != IGNORE_INDEX]).long() for labels in target]
        num_masks = max(sum(len(classes) for classes in present), 1)
        return sum(self._layer_loss(cls, masks, target, present, num_masks) for cls, masks in layers)

    def _check_target(self, output: MaskClassification, target: torch.Tensor) -> None:
        if target.dim() != 3 or target.shape[0] != output.class_logits.shape[0]:
            raise DataError(
                f"loss 'maskformer': the target must be (N, H, W) label maps for a batch of "
                f"{output.class_logits.shape[0]}, got shape {tuple(target.shape)}"
            )
        bad = (target >= self.num_classes) & (target != IGNORE_INDEX)
        if bad.any():
            raise DataError(
                f"loss 'maskformer': the target holds class id {int(target[bad].max())} but the model has "
                f"{self.num_classes} classes (ids 0..{self.num_classes - 1}, 255 ignored); check the "
                "dataset's remapper or the model's num_classes"
            )

    def _layer_loss(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        target: torch.Tensor,
        present: list[torch.Tensor],
        num_masks: int,
    ) -> torch.Tensor:
        class_logits, mask_logits = class_logits.float(), mask_logits.float()
        n, q, k1 = class_logits.shape
        target_classes = torch.full((n, q), k1 - 1, dtype=torch.long, device=class_logits.device)
        focal = dice = mask_logits.sum() * 0  # keeps a graph when no image has a target
        low = F.interpolate(target[:, None].float(), size=mask_logits.shape[-2:], mode="nearest")[:, 0].long()
        for b, (classes, labels) in enumerate(zip(present, target)):
            if not len(classes):
                continue
            with torch.no_grad():
                small = low[b].flatten()
                cost = matching_cost(
                    class_logits[b],
                    mask_logits[b].flatten(1),
                    classes,
                    (small[None] == classes[:, None]).float(),
                    (small != IGNORE_INDEX).float(),
                    self.weights,
                )
            queries, picked = hungarian_match(cost)
            queries, picked = queries.to(class_logits.device), picked.to(class_logits.device)
            target_classes[b, queries] = classes[picked]
            matched = F.interpolate(
                mask_logits[b, queries][None], size=labels.shape, mode="bilinear", align_corners=False
            )[0].flatten(1)
            flat = labels.flatten()
            masks = (flat[None] == classes[picked][:, None]).float()
            valid = (flat != IGNORE_INDEX).float().expand_as(masks)
            focal = focal + sigmoid_focal_loss(matched, masks, valid).sum()
            dice = dice + dice_loss(matched, masks, valid).sum()
        class_weights = torch.ones(k1, device=class_logits.device)
        class_weights[-1] = self.no_object_weight
        ce = F.cross_entropy(class_logits.transpose(1, 2), target_classes, class_weights)
        class_weight, mask_weight, dice_weight = self.weights
        return class_weight * ce + (mask_weight * focal + dice_weight * dice) / num_masks
