"""The seed losses (ohem-ce, pixel-distribution, confusion-focal) and the saved confusion matrix they read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from zoo_core.cli import main
from zoo_core.components.losses import (
    ConfusionFocalLoss,
    OhemCrossEntropyLoss,
    PixelDistributionLoss,
    confusion_pair_weights,
    ohem_keep,
    pixel_distribution_weights,
)
from zoo_core.data.synth import synthesize
from zoo_core.errors import ConfigError, DataError
from zoo_core.evaluation.confusion import read_confusion, write_confusion
from zoo_core.interfaces import MaskClassification
from zoo_core.plugins import get_catalog

# --- independent references: plain python over every pixel --------------------------------------


def python_probs(scores: torch.Tensor, normalise_only: bool = False) -> list:
    """probs[n][y][x] = list of class probabilities: softmax with math.exp, or plain normalisation."""
    n, c, h, w = scores.shape
    values = scores.tolist()
    out = []
    for i in range(n):
        rows = []
        for y in range(h):
            row = []
            for x in range(w):
                s = [values[i][k][y][x] for k in range(c)]
                e = s if normalise_only else [math.exp(v) for v in s]
                row.append([v / sum(e) for v in e])
            rows.append(row)
        out.append(rows)
    return out


def labelled_pixels(probs: list, target: torch.Tensor):
    """(class probabilities, true class) of every labelled pixel."""
    t = target.tolist()
    for i, image in enumerate(probs):
        for y, row in enumerate(image):
            for x, p in enumerate(row):
                if t[i][y][x] != 255:
                    yield p, t[i][y][x]


def argmax(p: list) -> int:
    return max(range(len(p)), key=lambda k: p[k])


def naive_pixel_distribution(probs, target, w):
    terms = [-max(w[y], w[argmax(p)]) * math.log(p[y]) for p, y in labelled_pixels(probs, target)]
    return sum(terms) / len(terms)


def naive_confusion_focal(probs, target, cm, gamma=2.0):
    terms = []
    for p, y in labelled_pixels(probs, target):
        q = argmax(p)
        weight = cm[y][q] / max(min(cm[y][y], cm[q][q]), 1)
        terms.append(-weight * (1 - p[y]) ** gamma * math.log(p[y]))
    return sum(terms) / len(terms)


def naive_ohem(probs, target, thresh, min_kept_per_image):
    pixels = [p[y] for p, y in labelled_pixels(probs, target)]
    batch_kept = min_kept_per_image * len(probs)
    if len(pixels) <= batch_kept:
        kept = pixels
    else:
        threshold = max(sorted(pixels)[batch_kept], thresh)
        kept = [p for p in pixels if p < threshold]
    return sum(-math.log(p) for p in kept) / len(kept), len(kept)


@pytest.fixture
def tiny():
    """Logits (2, 3, 4, 5) and a target of the same size with some ignored pixels."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 4, 5, generator=g) * 2
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0, :3] = 255
    target[1, 2, 4] = 255
    return logits, target


CONFUSION = [[50, 7, 0], [3, 20, 4], [1, 0, 0]]  # class 2 never right: its diagonal is clamped to 1


@pytest.fixture
def confusion_file(tmp_path) -> Path:
    path = tmp_path / "confusion.json"
    write_confusion(path, np.array(CONFUSION), ["a", "b", "c"])
    return path


# --- hand-computed values -----------------------------------------------------------------------


def two_pixels():
    """Pixel 1: logits (2, 0), true class 1, predicted 0: p = 1 / (1 + e^2) = 0.1192029, -ln p = 2.1269280.
    Pixel 2: logits (0, 1), true class 1, predicted 1: p = e / (1 + e) = 0.7310586, -ln p = 0.3132617."""
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    return logits, torch.tensor([[[1, 1]]])


def test_pixel_distribution_hand_computed(tmp_path):
    stats = {
        "num_classes": 2,
        "class_names": ["a", "b"],
        "pixel_counts": [300, 100],
        "frame_counts": [1, 1],
        "video_counts": [1, 1],
        "priors": [0.75, 0.25],
        "labelled_pixels": 400,
    }
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    # mean 200: w = (sqrt(1.5), sqrt(0.5)) = (1.2247449, 0.7071068)
    # pixel 1: max(w1, w0) = 1.2247449 -> 2.6049537; pixel 2: w1 -> 0.2215101; mean over the 2 labelled pixels
    loss = PixelDistributionLoss(stats=str(tmp_path / "stats.json"), num_classes=2)(*two_pixels())
    assert loss.item() == pytest.approx(1.4132268, rel=1e-6)


def test_confusion_focal_hand_computed(tmp_path):
    write_confusion(tmp_path / "c.json", np.array([[8, 2], [4, 1]]), ["a", "b"])
    # pixel 1: C[1,0] / min(C[1,1], C[0,0]) = 4 / 1; (1 - 0.1192029)^2 = 0.7758035
    #   -> 4 * 0.7758035 * 2.1269280 = 6.6003127
    # pixel 2: C[1,1] / C[1,1] = 1; (1 - 0.7310586)^2 = 0.0723295 -> 0.0723295 * 0.3132617 = 0.0226581
    loss = ConfusionFocalLoss(confusion=str(tmp_path / "c.json"))(*two_pixels())
    assert loss.item() == pytest.approx((6.6003127 + 0.0226581) / 2, rel=1e-6)


def test_ohem_hand_computed():
    # probabilities 0.1192 and 0.7311; min_kept 1 -> threshold max(2nd smallest 0.7311, 0.7): pixel 1 only
    assert OhemCrossEntropyLoss(thresh=0.7, min_kept=1)(*two_pixels()).item() == pytest.approx(2.1269280, rel=1e-6)
    # min_kept 2 covers both pixels: plain cross-entropy
    expected = (2.1269280 + 0.3132617) / 2
    assert OhemCrossEntropyLoss(thresh=0.7, min_kept=2)(*two_pixels()).item() == pytest.approx(expected, rel=1e-6)


def test_weight_helpers_hand_computed():
    torch.testing.assert_close(
        pixel_distribution_weights([300, 100, 0, 400]),
        torch.tensor([math.sqrt(1.5), math.sqrt(0.5), 0.0, math.sqrt(2.0)]),
    )
    # rows = truth: W[0,1] = 3 / min(0, 5) clamped to 1; W[1,1] = 5 / 5; W[0,0] = 0 / 1
    torch.testing.assert_close(
        confusion_pair_weights(np.array([[0, 3], [2, 5]])), torch.tensor([[0.0, 3.0], [2.0, 1.0]])
    )


# --- naive per-pixel references -----------------------------------------------------------------


def test_pixel_distribution_matches_naive_loop(tiny):
    logits, target = tiny
    w = [1.3, 0.4, 0.9]
    expected = naive_pixel_distribution(python_probs(logits), target, w)
    loss = PixelDistributionLoss(class_weight=w, loss_weight=0.5)(logits, target, None)
    assert loss.item() == pytest.approx(0.5 * expected, rel=1e-5)


def test_confusion_focal_matches_naive_loop(tiny, confusion_file):
    logits, target = tiny
    for gamma in (2.0, 0.0, 1.5):
        expected = naive_confusion_focal(python_probs(logits), target, CONFUSION, gamma)
        loss = ConfusionFocalLoss(confusion=str(confusion_file), gamma=gamma)(logits, target, None)
        assert loss.item() == pytest.approx(expected, rel=1e-5), gamma


@pytest.mark.parametrize("thresh, min_kept", [(0.7, 1), (0.7, 9), (0.3, 4), (1.0, 2), (0.5, 100)])
def test_ohem_matches_naive_loop(tiny, thresh, min_kept):
    logits, target = tiny
    expected, kept = naive_ohem(python_probs(logits), target, thresh, min_kept)
    loss = OhemCrossEntropyLoss(thresh=thresh, min_kept=min_kept)(logits, target, None)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    labelled = target != 255
    true_prob = logits.softmax(1).gather(1, target.clamp(max=2).unsqueeze(1)).squeeze(1)[labelled]
    assert int(ohem_keep(true_prob, thresh, 2 * min_kept).sum()) == kept >= min(2 * min_kept, int(labelled.sum()))


def test_mask_classification_outputs_use_normalised_scores(tiny, confusion_file):
    _, target = tiny
    g = torch.Generator().manual_seed(3)
    output = MaskClassification(torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 2, 3, generator=g))
    target = target[:, :2, :3].contiguous()
    probs = python_probs(output.to_scores(), normalise_only=True)
    w = [1.3, 0.4, 0.9]
    loss = PixelDistributionLoss(class_weight=w)(output, target, None)
    assert loss.item() == pytest.approx(naive_pixel_distribution(probs, target, w), rel=1e-5)
    loss = ConfusionFocalLoss(confusion=str(confusion_file))(output, target, None)
    assert loss.item() == pytest.approx(naive_confusion_focal(probs, target, CONFUSION), rel=1e-5)
    loss = OhemCrossEntropyLoss(thresh=0.7, min_kept=2)(output, target, None)
    assert loss.item() == pytest.approx(naive_ohem(probs, target, 0.7, 2)[0], rel=1e-5)


# --- OHEM selection ---------------------------------------------------------------------------


def test_ohem_keep_counts():
    p = torch.tensor([0.1, 0.9, 0.5, 0.8, 0.3])
    assert ohem_keep(p, 0.7, 2).tolist() == [True, False, True, False, True]  # thresh wins: 3 below 0.7
    assert ohem_keep(p, 0.7, 4).tolist() == [True, False, True, True, True]  # min_kept wins: below 0.9
    assert ohem_keep(p, 0.2, 1).tolist() == [True, False, False, False, False]
    assert ohem_keep(p, 0.2, 5).all()  # no more pixels than min_kept: all of them


def test_ohem_with_thresh_1_and_large_min_kept_is_plain_cross_entropy(tiny):
    logits, target = tiny
    loss = OhemCrossEntropyLoss(thresh=1.0, min_kept=1000)(logits, target, None)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, ignore_index=255))


def test_ohem_min_kept_dominates_when_few_pixels_are_hard():
    target = torch.zeros(2, 6, 8, dtype=torch.long)
    logits = torch.zeros(2, 3, 6, 8)
    logits[:, 0] = torch.linspace(3.0, 6.0, 96).reshape(2, 6, 8)  # every pixel sure of its class: p > 0.9
    logits[0, 0, 1, 1] = -2.0  # the only two hard pixels
    logits[1, 0, 4, 2] = 0.5
    nll = -logits.log_softmax(1)[:, 0].flatten()
    assert int((nll > -math.log(0.7)).sum()) == 2
    loss = OhemCrossEntropyLoss(thresh=0.7, min_kept=5)(logits, target, None)
    # 5 per image: the 10 pixels with the largest loss, found here by a full sort
    torch.testing.assert_close(loss, nll.sort(descending=True).values[:10].mean())
    assert int(ohem_keep((-nll).exp(), 0.7, 10).sum()) == 10


# --- what every loss shares --------------------------------------------------------------------


def all_losses(confusion_file: Path):
    return [
        OhemCrossEntropyLoss(thresh=0.7, min_kept=3),
        PixelDistributionLoss(class_weight=[1.3, 0.4, 0.9]),
        ConfusionFocalLoss(confusion=str(confusion_file)),
    ]


def test_logits_are_upsampled_to_the_target(tiny, confusion_file):
    logits, target = tiny
    small = logits[:, :, :2, :3]
    target = torch.randint(0, 3, (2, 8, 12), generator=torch.Generator().manual_seed(1))
    up = F.interpolate(small, size=(8, 12), mode="bilinear", align_corners=False)
    for loss in all_losses(confusion_file):
        torch.testing.assert_close(loss(small, target, None), loss(up, target, None))


def test_batch_without_labelled_pixels_gives_zero_with_a_graph(confusion_file):
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    output = MaskClassification(torch.randn(1, 4, 4, requires_grad=True), torch.randn(1, 4, 2, 2))
    for loss in all_losses(confusion_file):
        for out in (logits, output):
            value = loss(out, torch.full((1, 2, 2), 255), None)
            assert value.item() == 0.0 and value.requires_grad
            value.backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_bf16_autocast_computes_in_float32(tiny, confusion_file):
    logits, target = tiny
    logits = logits.bfloat16()
    for loss in all_losses(confusion_file):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(logits, target, None)
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, loss(logits.float(), target, None))


def test_gradients_reach_the_logits(tiny, confusion_file):
    logits, target = tiny
    for loss in all_losses(confusion_file):
        x = logits.clone().requires_grad_()
        loss(x, target, None).backward()
        assert x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


def test_registered_in_the_catalog_with_a_summary():
    catalog = get_catalog()
    for name in ("ce", "ohem-ce", "pixel-distribution", "confusion-focal"):
        entry = catalog.get("loss", name)
        assert entry.distribution == "zoo-core" and len(entry.summary) > 20


# --- bad input ---------------------------------------------------------------------------------


def test_bad_arguments_are_config_errors(tmp_path):
    catalog = get_catalog()
    with pytest.raises(ConfigError, match=r"thresh must be in \(0, 1\]"):
        catalog.build("loss", "ohem-ce", {"thresh": 1.5})
    with pytest.raises(ConfigError, match="min_kept must be a positive integer"):
        catalog.build("loss", "ohem-ce", {"min_kept": 0})
    with pytest.raises(ConfigError, match="give exactly one of stats: PATH .* or class_weight"):
        catalog.build("loss", "pixel-distribution", {}, num_classes=3)
    with pytest.raises(ConfigError, match="give exactly one"):
        catalog.build("loss", "pixel-distribution", {"stats": "s.json", "class_weight": [1, 2, 3]}, num_classes=3)
    with pytest.raises(ConfigError, match="has no argument.s. confusion"):
        catalog.build("loss", "ohem-ce", {"confusion": "c.json"})
    with pytest.raises(DataError, match="nope.json do not exist; write it with 'zoo data stats"):
        catalog.build("loss", "pixel-distribution", {"stats": str(tmp_path / "nope.json")}, num_classes=3)


def test_class_count_mismatch_names_the_source(confusion_file, tiny):
    logits, target = tiny
    with pytest.raises(DataError, match=r"confusion matrix .*confusion.json has 3 classes but the head predicts 124"):
        get_catalog().build("loss", "confusion-focal", {"confusion": str(confusion_file)}, num_classes=124)
    loss = PixelDistributionLoss(class_weight=[1.0, 2.0])
    with pytest.raises(DataError, match="class_weight has 2 classes but the head predicts 3"):
        loss(logits, target, None)
    with pytest.raises(DataError, match="target holds ids outside 0..2"):
        ConfusionFocalLoss(confusion=str(confusion_file))(logits, target.masked_fill(target == 1, 7), None)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist; write it again with 'zoo eval"),
        ("[1, 2", "not readable JSON"),
        (json.dumps({"matrix": [[1]]}), "class_names: required but missing"),
        (
            json.dumps({"class_names": ["a", "b"], "matrix": [[1, 2], [3]]}),
            "'matrix' has 2 rows of 1/2 counts but there are 2 class names",
        ),
        (json.dumps({"class_names": ["a", "b"], "matrix": [[1, 2, 3], [4, 5, 6]]}), "'matrix' has 2 rows of 3 counts"),
        (
            json.dumps({"class_names": ["a", "b"], "matrix": [[1, -2], [3, 4]]}),
            r"matrix\[0\]\[1\]: Input should be greater than or equal to 0 \(got -2\)",
        ),
        (
            json.dumps({"class_names": ["a", "b"], "matrix": [[1, [2]], [3, 4]]}),
            r"matrix\[0\]\[1\]: Input should be a valid "
            r"integer \(got \[2\]\)",
        ),
        (
            json.dumps({"class_names": ["a", "b"], "matrix": [[1, 2.5], [3, 4]]}),
            r"matrix\[0\]\[1\]: Input should be a valid "
            "integer",
        ),
    ],
)
def test_read_confusion_checks_the_format(tmp_path, content, message):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=f"confusion matrix {path}.*{message}"):
        read_confusion(path)


# --- writing the confusion matrix: zoo eval --confusion, zoo run ---------------------------------


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("losses_synth")
    synthesize(root, videos=3, frames=3, size=(64, 96), seed=5)
    return root


def test_eval_writes_the_confusion_matrix(synth_root, tmp_path):
    rng = np.random.default_rng(0)
    expected = np.zeros((124, 124), np.int64)
    for video in (synth_root / "val.txt").read_text().split():
        (tmp_path / "pred" / video).mkdir(parents=True)
        for path in sorted((synth_root / "data" / video / "mask").glob("*.png")):
            raw = np.array(Image.open(path)).astype(np.int64)
            pred = rng.integers(0, 5, raw.shape)  # random train ids 0..4
            Image.fromarray(pred.astype(np.uint8), mode="L").save(tmp_path / "pred" / video / path.name)
            labelled = (raw >= 1) & (raw <= 124)
            np.add.at(expected, (raw[labelled] - 1, pred[labelled]), 1)
    out = tmp_path / "out" / "confusion.json"
    result = CliRunner().invoke(
        main, ["eval", str(tmp_path / "pred"), "--data", str(synth_root), "--confusion", str(out)]
    )
    assert result.exit_code == 0, result.output
    matrix, names = read_confusion(out)
    assert np.array_equal(matrix, expected) and names[0] == "wall" and len(names) == 124


@pytest.mark.slow
def test_run_writes_confusion_json_next_to_metrics(synth_root, tmp_path):
    from zoo_core.model_dir import build_segmentor, save_model_dir
    from zoo_core.pipeline.run import run_pipeline
    from zoo_core.pipeline.schema import validate

    model_config = {
        "num_classes": 124,
        "backbone": {"type": "timm", "args": {"model_name": "resnet10t", "out_indices": [1, 2]}},
        "heads": [
            {
                "type": "fcn",
                "args": {"in_index": [0, 1], "input_transform": "resize_concat", "channels": 8, "num_convs": 1},
            }
        ],
    }
    torch.manual_seed(0)
    save_model_dir(build_segmentor(model_config), model_config, tmp_path / "model")
    pipeline = validate(
        {
            "data": {"root": str(synth_root), "split": "val"},
            "models": [{"name": "m", "weights": str(tmp_path / "model"), "tta": {"type": "identity"}}],
            "runtime": {"amp": "none", "progress": False},
            "output": {"overlays": 0},
        },
        "test",
    )
    metrics = run_pipeline(pipeline, tmp_path / "run", log=lambda *args: None)
    matrix, names = read_confusion(tmp_path / "run" / "confusion.json")
    assert len(names) == 124
    # the per-class IoU of metrics.json, recomputed from the saved matrix
    for c, name in enumerate(names):
        union = matrix[c].sum() + matrix[:, c].sum() - matrix[c, c]
        saved = metrics["per_class_iou"][name]
        assert saved is None if matrix[c].sum() == 0 else saved == pytest.approx(matrix[c, c] / union)
    assert matrix.sum() > 0
    loss = get_catalog().build(
        "loss", "confusion-focal", {"confusion": str(tmp_path / "run" / "confusion.json")}, num_classes=124
    )
    assert loss.num_classes == 124
