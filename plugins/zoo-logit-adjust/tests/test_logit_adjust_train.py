"""A short real training with the logit-adjust head, prediction without the stats file, and the post-hoc form."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

from zoo_core.model_dir import load_model_dir
from zoo_core.testing import TINY_MODEL


@pytest.mark.slow
def test_train_with_the_head_then_predict_without_the_stats(zoo_cli, synthetic_vspw, tiny_model_dir, tmp_path):
    assert zoo_cli("data", "stats", synthetic_vspw.root, "--split", "train", "-o", "stats.json").exit_code == 0
    heads = list(TINY_MODEL["heads"])
    heads[-1] = {"type": "logit-adjust", "args": {"head": heads[-1], "stats": "stats.json", "min_count": 1}}
    pipeline = {
        "data": {"root": str(synthetic_vspw.root), "split": "val"},
        "model": dict(TINY_MODEL, heads=heads),
        "train": {
            "max_iters": 10,
            "batch_size": 4,
            "lr": 2e-3,
            "log_every": 1,
            "checkpoint_every": 0,
            "transforms": [{"type": "flip"}],
        },
        "models": [{"name": "la", "weights": "model"}],
        "output": {"overlays": 0},
        "runtime": {"device": "cpu", "amp": "none", "threads": 1, "progress": False},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    result = zoo_cli("train", "pipeline.yaml", "--out", "model")
    assert result.exit_code == 0, result.output
    losses = [json.loads(line)["loss"] for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses
    weights = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert {"heads.1.head.conv_seg.weight", "heads.1.head.conv_seg.scale"} <= set(weights)
    assert weights["heads.1.head.conv_seg.scale"].item() != 16.0  # learned

    (tmp_path / "stats.json").rename(tmp_path / "kept.json")  # prediction does not read the prior
    model, _ = load_model_dir(tmp_path / "model")
    assert not model.training
    result = zoo_cli("run", "pipeline.yaml", "--out", "run")
    assert result.exit_code == 0, result.output
    miou = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    assert miou > 2 * max(synthetic_vspw.chance_miou("val"))  # uniform and majority-class guesses

    # the post-hoc form on the same tiny model: with and without it, the predictions differ
    plain = dict(pipeline, models=[{"name": "tiny", "weights": str(tiny_model_dir)}])
    adjusted = dict(
        pipeline,
        models=[{"name": "tiny", "weights": str(tiny_model_dir), "tta": {
            "type": "logit-adjust", "args": {"stats": "kept.json", "min_count": 1, "tau": 1.0}}}],
    )  # fmt: skip
    for name, spec in (("plain", plain), ("adjusted", adjusted)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        result = zoo_cli("run", f"{name}.yaml", "--out", name)
        assert result.exit_code == 0, result.output
    video = synthetic_vspw.splits["val"][0]
    frame = sorted((tmp_path / "plain" / "pred" / video).glob("*.png"))[0].name
    plain_labels, adjusted_labels = (
        np.array(Image.open(tmp_path / name / "pred" / video / frame)) for name in ("plain", "adjusted")
    )
    assert (plain_labels != adjusted_labels).any()
