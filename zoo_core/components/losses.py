"""The seed losses: plain cross-entropy, OHEM cross-entropy (5th place), the pixel-distribution
and the confusion-matrix losses (3rd place).

Every loss is called as ``loss(output, target, context)``. ``output`` is any head output:
logits are upsampled bilinearly to the target's size; mask-classification scores are
upsampled too and normalised to probabilities. ``target`` is the ``(N, H, W)`` train ids with
``ignore_index`` for void. The losses compute in float32 with autocast off, whatever the
training precision. A batch without labelled pixels gives 0 with a graph (every head still
gets a zero gradient), not NaN. The result is scaled by ``loss_weight``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..interfaces import IGNORE_INDEX, HeadOutput, LossContext, MaskClassification, pixel_scores


def _scores(output: HeadOutput, target: torch.Tensor) -> torch.Tensor:
    """Float32 ``(N, C, H, W)`` scores at the target's size (call with autocast off)."""
    scores = pixel_scores(output).float()
    if scores.shape[2:] != target.shape[-2:]:
        scores = F.interpolate(scores, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return scores


def _log_probs(output: HeadOutput, scores: torch.Tensor) -> torch.Tensor:
    """Per-pixel class log-probabilities: log-softmax of logits, or the log of normalised mask-classification scores."""
    if isinstance(output, MaskClassification):
        probs = scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return probs.clamp_min(1e-12).log()
    return scores.log_softmax(dim=1)


def _check_target(loss: str, target: torch.Tensor, labelled: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    if int(target[labelled].max()) >= num_classes or int(target[labelled].min()) < 0:
        raise DataError(
            f"{loss} loss: target holds ids outside 0..{num_classes - 1} besides ignore_index "
            f"{ignore_index}; check the dataset's label remapping"
        )


def _true_class_log_probs(
    loss: str, output: HeadOutput, target: torch.Tensor, ignore_index: int, classes: tuple[int, str] | None = None
):
    """``(scores, log p_y of the labelled pixels (M,), labelled mask)``.

    The middle is ``None`` when nothing is labelled.

    ``classes`` is ``(number of classes, where that number comes from)`` of the loss's static
    context, checked against the head's output.
    """
    scores = _scores(output, target)
    if classes is not None:
        _check_classes(loss, classes[0], scores.shape[1], classes[1])
    labelled = target != ignore_index
    if not labelled.any():
        return scores, None, labelled
    _check_target(loss, target, labelled, scores.shape[1], ignore_index)
    log_probs = _log_probs(output, scores)
    picked = log_probs.gather(1, target.masked_fill(~labelled, 0).unsqueeze(1)).squeeze(1)
    return scores, picked[labelled], labelled


def _check_classes(loss: str, have: int, predicted: int, source: str) -> None:
    if have != predicted:
        raise DataError(
            f"{loss} loss: {source} has {have} classes but the head predicts {predicted}; "
            "use statistics of a dataset with the model's label set"
        )


class CrossEntropyLoss:
    """Pixel cross-entropy, mean over labelled pixels, with optional class weights.

    With ``class_weight`` the mean is weighted as in ``torch.nn.functional.cross_entropy``
    (divided by the sum of the weights of the labelled pixels). ``stats`` (the file written
    by ``zoo data stats``) gives instead the 3rd-place report's pixel-distribution weights
    ``sqrt(n_i / mean(n))`` (4.2.1, see :func:`pixel_distribution_weights`), the "cross
    entropy loss with a class weight in pytorch" its VOLO model trained with (4.1.2). See the
    module docstring for what every loss accepts.
    """

    def __init__(
        self,
        class_weight: Sequence[float] | None = None,
        stats: str | None = None,
        num_classes: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        loss_weight: float = 1.0,
    ):
        if stats is not None and class_weight is not None:
            raise ConfigError("ce loss: give stats: PATH or class_weight: [...], not both (both set the class weights)")
        if stats is not None:
            from ..data.stats import read_stats

            self.class_weight = pixel_distribution_weights(read_stats(Path(stats))["pixel_counts"])
            if num_classes is not None:
                _check_classes("ce", len(self.class_weight), num_classes, f"class statistics {stats}")
        else:
            self.class_weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float32)
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight

    def __call__(self, output: HeadOutput, target: torch.Tensor, context: LossContext | None = None) -> torch.Tensor:
        with torch.autocast(target.device.type, enabled=False):
            scores = _scores(output, target)
            num_classes = scores.shape[1]
            if self.class_weight is not None and len(self.class_weight) != num_classes:
                raise DataError(
                    f"ce loss: class_weight has {len(self.class_weight)} entries but the head predicts "
                    f"{num_classes} classes; give one weight per class"
                )
            labelled = target != self.ignore_index
            if not labelled.any():
                return scores.sum() * 0.0
            _check_target("ce", target, labelled, num_classes, self.ignore_index)
            weight = None if self.class_weight is None else self.class_weight.to(scores.device)
            loss = F.nll_loss(_log_probs(output, scores), target, weight=weight, ignore_index=self.ignore_index)
            return self.loss_weight * loss


def ohem_keep(true_prob: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """Which pixels OHEM keeps, given the probabilities of their true class (a 1-D tensor).

    mmsegmentation's ``OHEMPixelSampler``: a pixel is kept when its probability is below
    ``max(thresh, p_k)``, ``p_k`` being the ``(min_kept + 1)``-th smallest probability, so
    at least ``min_kept`` pixels are kept (fewer only if several share the probability
    ``p_k``). ``p_k`` is found with ``kthvalue``: no sort of all the pixels. When there are
    at most ``min_kept`` pixels all are kept (mmsegmentation would drop the most confident
    one there, an artefact of indexing its sorted list at ``numel - 1``).
    """
    if true_prob.numel() <= min_kept:
        return torch.ones_like(true_prob, dtype=torch.bool)
    kth = true_prob.kthvalue(min_kept + 1).values
    return true_prob < torch.clamp(kth, min=thresh)


class OhemCrossEntropyLoss:
    """Cross-entropy over hard pixels only (OHEM): true-class probability below thresh, at least min_kept per image.

    The 5th-place recipe (2.1): ``thresh`` 0.7 and ``min_kept`` 200000. The selection is
    mmsegmentation's ``OHEMPixelSampler`` (see :func:`ohem_keep`): as there, ``min_kept`` is
    per image, so a batch keeps at least ``min_kept * N`` pixels, and the selection carries
    no gradient. The loss is the mean cross-entropy over the kept pixels (mmsegmentation's
    default divides the kept pixels' sum by all pixels of the batch instead, which scales
    the loss down by the kept fraction). No kept pixel (all labelled pixels share one
    probability at or above ``thresh``) gives 0.
    """

    def __init__(
        self, thresh: float = 0.7, min_kept: int = 200_000, ignore_index: int = IGNORE_INDEX, loss_weight: float = 1.0
    ):
        if not 0.0 < float(thresh) <= 1.0:
            raise ConfigError(f"ohem-ce loss: thresh must be in (0, 1] (a probability), got {thresh!r}")
        if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 1:
            raise ConfigError(f"ohem-ce loss: min_kept must be a positive integer (pixels per image), got {min_kept!r}")
        self.thresh = float(thresh)
        self.min_kept = min_kept
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight

    def __call__(self, output: HeadOutput, target: torch.Tensor, context: LossContext | None = None) -> torch.Tensor:
        with torch.autocast(target.device.type, enabled=False):
            scores, log_p, _ = _true_class_log_probs("ohem-ce", output, target, self.ignore_index)
            if log_p is None:
                return scores.sum() * 0.0
            with torch.no_grad():
                keep = ohem_keep(log_p.exp(), self.thresh, self.min_kept * target.shape[0])
            if not keep.any():
                return scores.sum() * 0.0
            return self.loss_weight * -log_p[keep].mean()


def pixel_distribution_weights(pixel_counts: Sequence[float]) -> torch.Tensor:
    """Class weights ``sqrt(n_i / mean(n))`` of the 3rd-place report (4.2.1), as float32.

    ``mean(n)`` averages over all classes, absent ones included; a class with 0 pixels gets
    weight 0.
    """
    counts = torch.as_tensor(np.asarray(pixel_counts, dtype=np.float64))
    if counts.ndim != 1 or counts.numel() == 0 or (counts < 0).any() or counts.sum() == 0:
        raise ValueError("pixel counts must be a non-empty list of non-negative numbers, not all 0")
    return (counts / counts.mean()).sqrt().float()


class PixelDistributionLoss:
    """Cross-entropy weighted per pixel by max(w_true, w_predicted), w from the training set's pixel counts.

    The 3rd-place loss (4.2.1): ``1/n sum_i -max(w[y_i], w[y'_i]) ln p[y_i]`` with ``y_i``
    the true and ``y'_i`` the predicted class (argmax, no gradient) of pixel ``i`` and ``n``
    the number of labelled pixels (not the sum of the weights, unlike weighted ``ce``).

    The weights are given as ``class_weight`` or computed from ``stats`` (the file written
    by ``zoo data stats``, a path relative to the current directory) as the report states
    them: ``w_i = sqrt(n_i / mu)`` with ``n_i`` the pixels of class ``i`` and ``mu`` the
    mean of ``n_i`` over all classes; the square root is over the ratio, and frequent
    classes get the larger weights (the max lets a pixel of a rare class that is taken for
    a frequent one pay the frequent class's weight). A class with 0 pixels gets weight 0: it
    never raises a pixel's weight, and a pixel of that class counts with the weight of the
    class predicted for it. To weight the other way round, pass ``class_weight``.
    """

    def __init__(
        self,
        stats: str | None = None,
        class_weight: Sequence[float] | None = None,
        num_classes: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        loss_weight: float = 1.0,
    ):
        if (stats is None) == (class_weight is None):
            raise ConfigError(
                "pixel-distribution loss: give exactly one of stats: PATH (written by 'zoo data stats "
                "ROOT --split train -o stats.json') or class_weight: [one weight per class]"
            )
        if stats is not None:
            from ..data.stats import read_stats

            self.source = f"class statistics {stats}"
            self.class_weight = pixel_distribution_weights(read_stats(Path(stats))["pixel_counts"])
        else:
            self.source = "class_weight"
            weights = np.asarray(class_weight, dtype=np.float64)
            if weights.ndim != 1 or not np.isfinite(weights).all() or (weights < 0).any():
                raise ConfigError(
                    f"pixel-distribution loss: class_weight must be a list of non-negative numbers, "
                    f"got {class_weight!r}"
                )
            self.class_weight = torch.tensor(weights, dtype=torch.float32)
        if num_classes is not None:
            _check_classes("pixel-distribution", len(self.class_weight), num_classes, self.source)
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight

    def __call__(self, output: HeadOutput, target: torch.Tensor, context: LossContext | None = None) -> torch.Tensor:
        with torch.autocast(target.device.type, enabled=False):
            scores, log_p, labelled = _true_class_log_probs(
                "pixel-distribution", output, target, self.ignore_index, (len(self.class_weight), self.source)
            )
            if log_p is None:
                return scores.sum() * 0.0
            weight = self.class_weight.to(scores.device)
            predicted = scores.detach().argmax(dim=1)[labelled]
            pixel_weight = torch.maximum(weight[target[labelled]], weight[predicted])
            return self.loss_weight * -(pixel_weight * log_p).mean()


def confusion_pair_weights(matrix: np.ndarray) -> torch.Tensor:
    """``W[i, j] = C[i, j] / max(min(C[i, i], C[j, j]), 1)`` as float32 (rows = ground truth).

    The clamp to 1 avoids dividing by zero for a class never predicted correctly: its
    pairs weigh their raw confusion count, and a correct pixel of it weighs 0.
    """
    cm = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
    diagonal = cm.diagonal()
    return (cm / torch.minimum(diagonal[:, None], diagonal[None, :]).clamp_min(1.0)).float()


class ConfusionFocalLoss:
    """Focal cross-entropy weighted by a saved confusion matrix: C[y,y'] / min(C[y,y], C[y',y']).

    The 3rd-place fine-tuning loss (4.2.2):
    ``1/n sum_i -C[y_i, y'_i] / min(C[y_i, y_i], C[y'_i, y'_i]) (1 - p[y_i])^gamma ln p[y_i]``
    with ``y_i`` the true and ``y'_i`` the predicted class (argmax, no gradient), ``n`` the
    number of labelled pixels and ``gamma`` 2. ``C`` is the confusion matrix of an earlier
    model on the validation set (rows = ground truth), the ``confusion.json`` written by
    ``zoo eval --confusion`` or ``zoo run`` (a path relative to the current directory). A
    correctly predicted pixel weighs 1, a confused one the more its confusion was frequent
    relative to the two classes' correct pixels; a confusion never seen weighs 0. The
    denominator is clamped to at least 1 (see :func:`confusion_pair_weights`). The gradient
    flows through the focal factor, as in focal loss.
    """

    def __init__(
        self,
        confusion: str,
        gamma: float = 2.0,
        num_classes: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        loss_weight: float = 1.0,
    ):
        from ..evaluation.confusion import read_confusion

        if float(gamma) < 0:
            raise ConfigError(f"confusion-focal loss: gamma must be >= 0, got {gamma!r}")
        matrix, _ = read_confusion(Path(confusion))
        self.source = f"confusion matrix {confusion}"
        if num_classes is not None:
            _check_classes("confusion-focal", len(matrix), num_classes, self.source)
        self.pair_weight = confusion_pair_weights(matrix).flatten()
        self.num_classes = len(matrix)
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight

    def __call__(self, output: HeadOutput, target: torch.Tensor, context: LossContext | None = None) -> torch.Tensor:
        with torch.autocast(target.device.type, enabled=False):
            scores, log_p, labelled = _true_class_log_probs(
                "confusion-focal", output, target, self.ignore_index, (self.num_classes, self.source)
            )
            if log_p is None:
                return scores.sum() * 0.0
            predicted = scores.detach().argmax(dim=1)[labelled]
            weight = self.pair_weight.to(scores.device)[target[labelled] * self.num_classes + predicted]
            focal = (1.0 - log_p.exp()).clamp_min(0.0) ** self.gamma
            return self.loss_weight * -(weight * focal * log_p).mean()
