"""The maskformer loss: the matcher against brute force, each term and the total against hand-computed values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from zoo_maskformer.loss import MaskFormerLoss, dice_loss, hungarian_match, matching_cost, sigmoid_focal_loss

from zoo_core.errors import ConfigError, DataError
from zoo_core.interfaces import LossContext, MaskClassification
from zoo_core.testing import check_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_loss_is_registered_and_keeps_the_contract(zoo_registry):
    entry = zoo_registry.catalog.get("loss", "maskformer")
    assert entry.distribution == "zoo-maskformer"
    print(check_loss(entry.factory, name="maskformer", mask_classification=True, amp="bf16"))


@pytest.mark.parametrize("queries, targets", [(1, 1), (3, 3), (4, 2), (6, 3), (5, 5), (2, 4)])
def test_matcher_finds_the_cheapest_assignment(queries, targets):
    generator = torch.Generator().manual_seed(queries * 10 + targets)
    for _ in range(5):
        cost = torch.rand(queries, targets, generator=generator)
        rows, cols = hungarian_match(cost)
        pairs = min(queries, targets)
        assert len(rows) == len(cols) == pairs
        assert len(set(rows.tolist())) == len(set(cols.tolist())) == pairs  # one to one
        # brute force: every injective assignment of the smaller side to the larger
        if queries >= targets:
            best = min(
                sum(cost[q, t] for t, q in enumerate(p)) for p in itertools.permutations(range(queries), targets)
            )
        else:
            best = min(
                sum(cost[q, t] for q, t in enumerate(p)) for p in itertools.permutations(range(targets), queries)
            )
        assert cost[rows, cols].sum().item() == pytest.approx(float(best), abs=1e-6)


def test_focal_loss_by_hand():
    # p = 0.5 everywhere: target 1 gives 0.25 * 0.5^2 * ln 2, target 0 gives 0.75 * 0.5^2 * ln 2;
    # the third pixel is unlabelled and must not count, whatever its logit.
    logits = torch.tensor([[0.0, 0.0, 50.0], [math.log(3), 0.0, -50.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    valid = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    expected_0 = (0.25 * 0.25 * math.log(2) + 0.75 * 0.25 * math.log(2)) / 2
    # p = 0.75 with target 1: 0.25 * (1 - 0.75)^2 * -ln 0.75
    expected_1 = (0.25 * 0.0625 * math.log(4 / 3) + 0.25 * 0.25 * math.log(2)) / 2
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, valid), torch.tensor([expected_0, expected_1]))


def test_dice_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0, 9.0], [math.log(3), math.log(3), 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    valid = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # mask 0: p = (.5, .5), t = (1, 0): 1 - (2 * .5 + 1) / (1 + 1 + 1) = 1/3
    # mask 1: p = (.75, .75, .5), t = (1, 1, 0): 1 - (2 * 1.5 + 1) / (2 + 2 + 1) = 1/5
    torch.testing.assert_close(dice_loss(logits, targets, valid), torch.tensor([1 / 3, 1 / 5]))


def test_matching_cost_equals_the_losses_of_each_pair():
    generator = torch.Generator().manual_seed(0)
    class_logits = torch.randn(4, 6, generator=generator)
    mask_logits = torch.randn(4, 12, generator=generator)
    classes = torch.tensor([0, 3, 4])
    masks = (torch.rand(3, 12, generator=generator) > 0.5).float()
    valid = (torch.rand(12, generator=generator) > 0.2).float()
    cost = matching_cost(class_logits, mask_logits, classes, masks, valid, (1.0, 20.0, 1.0))
    prob = class_logits.softmax(-1)
    for q in range(4):
        for t in range(3):
            focal = sigmoid_focal_loss(mask_logits[q : q + 1], masks[t : t + 1], valid[None])
            dice = dice_loss(mask_logits[q : q + 1], masks[t : t + 1], valid[None])
            expected = -prob[q, classes[t]] + 20 * focal[0] + dice[0]
            torch.testing.assert_close(cost[q, t], expected)


def one_target_case(ignored_logit: float = 100.0) -> tuple[MaskClassification, torch.Tensor, float]:
    """Two queries, classes {0, 1} + no object, a 1x2 label map [1, 255]: the output, target and the loss by hand."""
    output, target, (ce, focal, dice) = one_target_terms(ignored_logit)
    return output, target, ce + 20 * focal + dice  # one target mask


def one_target_terms(ignored_logit: float = 100.0) -> tuple[MaskClassification, torch.Tensor, tuple[float, ...]]:
    """:func:`one_target_case` with the cross-entropy, focal and dice terms by hand, unweighted."""
    class_logits = torch.tensor([[[0.0, math.log(4), 0.0], [0.0, 0.0, 0.0]]])  # softmax (1/6, 4/6, 1/6), (1/3, ...)
    mask_logits = torch.tensor([[[[2.0, ignored_logit]], [[-2.0, -ignored_logit]]]])
    target = torch.tensor([[[1, 255]]])
    # query 0 is the cheaper match for the one target (class 1, mask [1]); query 1 becomes "no object"
    ce = (1.0 * math.log(6 / 4) + 0.1 * math.log(3)) / (1.0 + 0.1)
    p = sigmoid(2.0)
    focal = 0.25 * (1 - p) ** 2 * -math.log(p)
    dice = 1 - (2 * p + 1) / (p + 1 + 1)
    return MaskClassification(class_logits, mask_logits), target, (ce, focal, dice)


def test_each_term_by_hand():
    output, target, (ce, focal, dice) = one_target_terms()
    # each weight alone: the matching uses the same weights, and query 0 wins under each of them
    only = {"class_weight": 0.0, "mask_weight": 0.0, "dice_weight": 0.0}
    for name, expected in (("class_weight", ce), ("mask_weight", focal), ("dice_weight", dice)):
        loss = MaskFormerLoss(num_classes=2, **{**only, name: 1.0})
        assert loss(output, target).item() == pytest.approx(expected, rel=1e-5), name


def test_total_loss_by_hand_and_void_pixels_do_not_count():
    loss = MaskFormerLoss(num_classes=2)
    output, target, expected = one_target_case()
    assert loss(output, target, LossContext()).item() == pytest.approx(expected, rel=1e-5)
    output, target, _ = one_target_case(ignored_logit=-30.0)
    assert loss(output, target, LossContext()).item() == pytest.approx(expected, rel=1e-5)


def test_every_aux_layer_is_supervised_and_masks_are_resized_to_the_target():
    loss = MaskFormerLoss(num_classes=2)
    output, target, expected = one_target_case()
    # a second layer in aux with the queries swapped: its own matching gives the same value
    swapped = {"class_logits": output.class_logits.flip(1), "mask_logits": output.mask_logits.flip(1)}
    with_aux = MaskClassification(output.class_logits, output.mask_logits, [swapped])
    assert loss(with_aux, target).item() == pytest.approx(2 * expected, rel=1e-5)
    assert MaskFormerLoss(num_classes=2, deep_supervision=False)(with_aux, target).item() == pytest.approx(
        expected, rel=1e-5
    )
    # constant mask logits at a quarter of a 4x8 target: upsampled (bilinear) to the target's size
    big_target = torch.full((1, 4, 8), 255).index_fill_(2, torch.arange(4), 1)
    small = MaskClassification(output.class_logits, torch.tensor([[2.0, -2.0]]).view(1, 2, 1, 1).expand(1, 2, 1, 2))
    left_only = MaskClassification(output.class_logits, torch.tensor([[2.0, -2.0]]).view(1, 2, 1, 1))
    # 16 labelled pixels of p = sigmoid(2): the focal term is their mean (as for one pixel), dice sums them
    p = sigmoid(2.0)
    expected_big = expected - (1 - (2 * p + 1) / (p + 2)) + (1 - (2 * 16 * p + 1) / (16 * p + 16 + 1))
    assert loss(small, big_target).item() == pytest.approx(expected_big, rel=1e-5)
    assert loss(left_only, big_target).item() == pytest.approx(expected_big, rel=1e-5)


def test_bad_targets_and_outputs_are_refused():
    loss = MaskFormerLoss(num_classes=2)
    output, target, _ = one_target_case()
    with pytest.raises(DataError, match="class id 2 .* 2 classes"):
        loss(output, torch.tensor([[[2, 255]]]))
    with pytest.raises(ConfigError, match="mask-classification head"):
        loss(torch.zeros(1, 2, 1, 2), target)
    with pytest.raises(ConfigError, match="no_object_weight"):
        MaskFormerLoss(num_classes=2, no_object_weight=-1)
