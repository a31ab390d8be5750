"""The logit-adjust head and TTA policy: eq. 2 of the 5th-place report by hand, the contracts, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from zoo_logit_adjust.head import CosineClassifier
from zoo_logit_adjust.prior import log_prior
from zoo_logit_adjust.tta import adjust

from zoo_core.errors import ConfigError, DataError
from zoo_core.testing import TINY_MODEL, check_head, check_tta


def write_stats(path: Path, counts: list[int], names: list[str] | None = None) -> Path:
    """A stats.json as ``zoo data stats`` writes it, with these pixel counts."""
    names = names or [f"class-{i}" for i in range(len(counts))]
    total = sum(counts)
    path.write_text(
        json.dumps(
            {
                "num_classes": len(counts),
                "class_names": names,
                "pixel_counts": counts,
                "frame_counts": [int(c > 0) for c in counts],
                "video_counts": [int(c > 0) for c in counts],
                "priors": [c / total for c in counts],
                "labelled_pixels": total,
            }
        )
    )
    return path


def test_both_components_come_from_this_distribution(zoo_registry):
    for kind in ("head", "tta"):
        assert zoo_registry.catalog.get(kind, "logit-adjust").distribution == "zoo-logit-adjust"


def test_the_head_keeps_the_head_contract_around_fcn_and_ocr(zoo_registry, tmp_path):
    stats = write_stats(tmp_path / "stats.json", [10, 0, 30, 5, 1])
    factory = zoo_registry.catalog.get("head", "logit-adjust").factory
    fcn = {"type": "fcn", "args": {"channels": 8, "num_convs": 1}}
    check_head(factory, name="logit-adjust", head=fcn, stats=str(stats), min_count=1, amp="bf16")
    ocr = {"type": "ocr", "args": {"channels": 8, "ocr_channels": 4}}
    check_head(factory, name="logit-adjust", head=ocr, stats=str(stats), min_count=1, learn_scale=False)


def test_cosine_logits_with_the_prior_in_training_and_without_it_at_prediction(zoo_registry, tmp_path):
    stats = write_stats(tmp_path / "stats.json", [1, 3, 4])  # pi = 1/8, 3/8, 1/2
    head = zoo_registry.catalog.build(
        "head",
        "logit-adjust",
        {
            # num_convs 0, no concat, no dropout: the output is the classifier applied to the features
            "head": {"type": "fcn", "args": {"channels": 2, "num_convs": 0, "concat_input": False, "dropout_ratio": 0}},
            "stats": str(stats),
            "tau": 0.5,
            "scale": 2.0,
            "learn_scale": False,
        },
        in_channels=[2],
        in_strides=[4],
        num_classes=3,
    )
    assert head.classifier_path == "head.conv_seg" and isinstance(head.head.conv_seg, CosineClassifier)
    with torch.no_grad():
        head.head.conv_seg.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    features = [torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)]  # |f| = 5
    # s * cos(w_y, f) = 2 * (3/5, 4/5, 7/(5 sqrt 2)); tau log pi = 0.5 * ln(1/8, 3/8, 1/2)
    learned = [1.2, 1.6, 1.9798990]
    bias = [-1.0397208, -0.4904146, -0.3465736]
    head.train()
    torch.testing.assert_close(
        head(features, None).flatten(), torch.tensor([a + b for a, b in zip(learned, bias)]), atol=1e-6, rtol=0
    )
    head.eval()
    torch.testing.assert_close(head(features, None).flatten(), torch.tensor(learned), atol=1e-6, rtol=0)


def test_a_mask_classification_class_head_gets_no_prior_for_no_object(tmp_path):
    write_stats(tmp_path / "stats.json", [1, 1, 2])  # pi = 1/4, 1/4, 1/2
    weight = torch.eye(4, 2)  # a Linear(2, K + 1 = 4) class head's weight
    classifier = CosineClassifier(weight, False, 3, tmp_path / "stats.json", 1.0, 0, 1.0, False).train()
    queries = torch.tensor([[[1.0, 0.0]]])  # (N, Q, hidden): cos = (1, 0, 0, 0)
    expected = [1 + math.log(0.25), math.log(0.25), math.log(0.5), 0.0]  # "no object" (last) unbiased
    torch.testing.assert_close(classifier(queries).flatten(), torch.tensor(expected))
    assert classifier.eval()(queries).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


def test_the_prior_refuses_an_empty_class_unless_smoothed(tmp_path):
    stats = write_stats(tmp_path / "stats.json", [0, 3], ["sky", "road"])
    with pytest.raises(DataError) as error:
        log_prior(stats)
    assert str(error.value) == (
        f"class statistics {stats}: class 'sky' (train id 0) has 0 pixels, so its log prior is -inf; add "
        "min_count: 1 to the args of the logit-adjust (counts below it are raised to it), or count a split where "
        "every class appears"
    )
    prior, names = log_prior(stats, min_count=1)  # counts 1, 3
    torch.testing.assert_close(prior, torch.tensor([math.log(0.25), math.log(0.75)]))
    assert names == ["sky", "road"]


def test_post_hoc_adjustment_by_hand_and_through_an_inner_policy(zoo_registry, tmp_path):
    stats = write_stats(tmp_path / "stats.json", [1, 3])  # pi = 1/4, 3/4
    probs = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1)
    # softmax(log p - log pi) = normalise(p / pi) = normalise(0.8, 16/15) = (3/7, 4/7)
    torch.testing.assert_close(
        adjust(probs, torch.log(torch.tensor([0.25, 0.75])), 1.0).flatten(), torch.tensor([3 / 7, 4 / 7])
    )
    policy = zoo_registry.catalog.build(
        "tta", "logit-adjust", {"stats": str(stats), "tau": 1.0, "inner": {"type": "flip"}}
    )
    images = torch.zeros(1, 3, 2, 3)

    def predict(x: torch.Tensor) -> torch.Tensor:  # (0.2, 0.8) in the view's left column, else (0.5, 0.5)
        out = torch.full((x.shape[0], 2, *x.shape[2:]), 0.5)
        out[:, :, :, 0] = torch.tensor([0.2, 0.8]).view(1, 2, 1)
        return out

    result = policy(predict, images)
    # (0.5, 0.5) adjusts to normalise(2, 2/3) = (3/4, 1/4); flip averages the adjusted view and the
    # adjusted mirror flipped back: the left and right columns get (3/7 + 3/4) / 2, the middle 3/4.
    edge = torch.tensor([(3 / 7 + 3 / 4) / 2, (4 / 7 + 1 / 4) / 2])
    torch.testing.assert_close(result[0, :, 0, 0], edge)
    torch.testing.assert_close(result[0, :, 1, 2], edge)
    torch.testing.assert_close(result[0, :, 0, 1], torch.tensor([3 / 4, 1 / 4]))


def test_the_policy_keeps_the_tta_contract(zoo_registry, tmp_path):
    # check_tta asks a constant prediction to come back unchanged: a uniform prior adjusts nothing.
    stats = write_stats(tmp_path / "stats.json", [7] * 5)
    check_tta(zoo_registry.catalog.get("tta", "logit-adjust").factory, name="logit-adjust", stats=str(stats))
    check_tta(
        zoo_registry.catalog.get("tta", "logit-adjust").factory,
        name="logit-adjust",
        stats=str(stats),
        inner={"type": "multiscale-flip", "args": {"scales": [0.5, 1.0]}},
    )


def test_arguments_are_checked(zoo_registry, tmp_path):
    stats = str(write_stats(tmp_path / "stats.json", [1, 3]))
    with pytest.raises(ConfigError, match=r"tau must be a number >= 0 .* got -0.1"):
        zoo_registry.catalog.build("tta", "logit-adjust", {"stats": stats, "tau": -0.1})
    wrapped = {"type": "logit-adjust", "args": {"head": {"type": "fcn", "args": {"channels": 4}}, "stats": stats}}
    with pytest.raises(ConfigError, match="is a CosineClassifier; only a 1x1 Conv2d or a Linear can be made cosine"):
        zoo_registry.catalog.build(
            "head",
            "logit-adjust",
            {"head": wrapped, "stats": stats},
            in_channels=[2],
            in_strides=[4],
            num_classes=2,
        )


# -- through the CLI: one line, before any iteration ------------------------------------------------


def la_model(stats: str, **args) -> dict:
    heads = list(TINY_MODEL["heads"])
    heads[-1] = {"type": "logit-adjust", "args": {"head": heads[-1], "stats": stats, **args}}
    return dict(TINY_MODEL, heads=heads)


def train_file(folder: Path, root: Path, model: dict) -> Path:
    pipeline = {
        "data": {"root": str(root), "split": "val"},
        "model": model,
        "train": {"max_iters": 2, "batch_size": 2, "checkpoint_every": 0, "transforms": [{"type": "flip"}]},
        "runtime": {"amp": "none", "progress": False, "threads": 1},
    }
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"tau": -0.5}, "logit-adjust head: tau must be a number >= 0 (the weight of log prior; the report uses 0.03)"),
        ({}, "has 0 pixels, so its log prior is -inf; add min_count: 1 to the args of the logit-adjust head"),
        ({"min_count": 1, "stats": "missing.json"}, "class statistics missing.json do not exist"),
    ],
)
def test_bad_input_to_zoo_train_is_one_line_before_any_iteration(zoo_cli, synthetic_vspw, tmp_path, args, message):
    assert zoo_cli("data", "stats", synthetic_vspw.root, "--split", "train", "-o", "stats.json").exit_code == 0
    model = la_model(**{"stats": "stats.json", **args})
    result = zoo_cli("train", train_file(tmp_path, synthetic_vspw.root, model), "--out", "out")
    assert result.exit_code != 0
    (line,) = error_lines(result.stderr)
    assert message in line, line
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_zoo_run_refuses_a_negative_tau_or_other_classes(zoo_cli, synthetic_vspw, tiny_model_dir, tmp_path):
    write_stats(tmp_path / "two.json", [1, 3])
    for tta, message in (
        ({"type": "logit-adjust", "args": {"stats": "two.json", "tau": -1}}, "tau must be a number >= 0"),
        (
            {"type": "logit-adjust", "args": {"stats": "two.json"}},
            "stats: two.json has 2 classes but the model predicts 124",
        ),
    ):
        pipeline = {
            "data": {"root": str(synthetic_vspw.root), "split": "val"},
            "models": [{"name": "tiny", "weights": str(tiny_model_dir), "tta": tta}],
            "runtime": {"amp": "none", "progress": False},
        }
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(pipeline))
        result = zoo_cli("run", "run.yaml", "--out", "out")
        assert result.exit_code == 2
        (line,) = error_lines(result.stderr)
        assert message in line, line
        assert not (tmp_path / "out").exists()


# -- the MaskFormer class head (zoo-maskformer) --------------------------------------------------------------


def test_the_maskformer_class_head_gets_the_prior_but_not_for_no_object(zoo_registry, tmp_path):
    presets = pytest.importorskip("zoo_maskformer.presets", reason="the MaskFormer parts need zoo-maskformer")
    stats = write_stats(tmp_path / "stats.json", [5, 1, 0, 3, 9])
    maskformer = presets.model_config("maskformer-mini", 5)["heads"][-1]
    factory = zoo_registry.catalog.get("head", "logit-adjust").factory
    check_head(factory, name="logit-adjust", head=maskformer, stats=str(stats), min_count=1)

    head = factory(
        in_channels=[8, 16, 24, 32], in_strides=[4, 8, 16, 32], num_classes=5, head=maskformer,
        stats=str(stats), min_count=1, tau=0.5,
    )  # fmt: skip
    assert head.classifier_path == "head.predictor.class_embed"
    features = [torch.randn(1, c, 16 // (s // 4), 24 // (s // 4)) for c, s in zip([8, 16, 24, 32], [4, 8, 16, 32])]
    with torch.no_grad():
        trained, predicted = head.train()(features, None), head.eval()(features, None)  # no dropout, no BatchNorm
    counts = torch.tensor([5.0, 1.0, 1.0, 3.0, 9.0])  # the empty class raised to min_count 1
    bias = torch.cat([0.5 * (counts / counts.sum()).log(), torch.zeros(1)])  # "no object" (last) gets none
    torch.testing.assert_close(trained.class_logits - predicted.class_logits, bias.expand_as(trained.class_logits))
    torch.testing.assert_close(trained.mask_logits, predicted.mask_logits)
