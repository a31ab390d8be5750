"""``ce`` with ``stats:``: the pixel-distribution class weights of the 3rd place's VOLO model (report 4.1.2, 4.2.1)."""

from __future__ import annotations

import json

import pytest
import torch

from zoo_core.components.losses import CrossEntropyLoss
from zoo_core.errors import ConfigError, DataError
from zoo_core.plugins import get_catalog


@pytest.fixture
def stats_file(tmp_path):
    stats = {
        "num_classes": 2,
        "class_names": ["a", "b"],
        "pixel_counts": [300, 100],
        "frame_counts": [1, 1],
        "video_counts": [1, 1],
        "priors": [0.75, 0.25],
        "labelled_pixels": 400,
    }
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats))
    return path


def three_pixels():
    """Logits (2, 0) true 0: -ln p = 0.1269280; (2, 0) true 1: 2.1269280; (0, 1) true 1: 0.3132617; one void pixel."""
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]).T.reshape(1, 2, 1, 4)
    return logits, torch.tensor([[[0, 1, 1, 255]]])


def test_weights_from_stats_hand_computed(stats_file):
    # mean pixels 200: w = (sqrt(1.5), sqrt(0.5)) = (1.2247449, 0.7071068); torch's weighted mean divides by
    # the labelled pixels' weights: (1.2247449 x 0.1269280 + 0.7071068 x (2.1269280 + 0.3132617)) / 2.6389585
    loss = get_catalog().build("loss", "ce", {"stats": str(stats_file)}, num_classes=2)
    torch.testing.assert_close(loss.class_weight, torch.tensor([1.2247449, 0.7071068]))
    assert loss(*three_pixels()).item() == pytest.approx(0.7127544, rel=1e-6)
    # the same weights given by hand give the same loss; without weights it is the plain mean 0.8557059
    assert CrossEntropyLoss(class_weight=[1.2247449, 0.7071068])(*three_pixels()).item() == pytest.approx(0.7127544)
    assert CrossEntropyLoss()(*three_pixels()).item() == pytest.approx(0.8557059, rel=1e-6)


def test_bad_stats_arguments(stats_file, tmp_path):
    with pytest.raises(ConfigError, match="give stats: PATH or class_weight"):
        CrossEntropyLoss(class_weight=[1.0, 1.0], stats=str(stats_file))
    with pytest.raises(
        DataError, match=r"ce loss: class statistics .*stats.json has 2 classes but the head predicts 3"
    ):
        CrossEntropyLoss(stats=str(stats_file), num_classes=3)
    with pytest.raises(DataError, match="nope.json do not exist; write it with 'zoo data stats"):
        CrossEntropyLoss(stats=str(tmp_path / "nope.json"), num_classes=2)
