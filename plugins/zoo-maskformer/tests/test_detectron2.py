"""The ``ZooMaskFormer`` detectron2 meta-architecture: built from a cfg, trains, infers as the official code does."""

from __future__ import annotations

import math

import pytest
import torch

from zoo_core.model_dir import load_model_dir

pytest.importorskip("detectron2")

from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from test_import_d2 import CHECKPOINT, official_inputs  # noqa: E402
from zoo_maskformer.convert_d2 import import_d2  # noqa: E402
from zoo_maskformer.detectron2 import add_maskformer_config  # noqa: E402


def tiny_cfg():
    """The sizes of the official fixture (scripts/make_official_fixture.py), in the official keys."""
    cfg = get_cfg()
    add_maskformer_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "ZooMaskFormer"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SWIN.EMBED_DIM = 4
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 1, 2, 2]
    cfg.MODEL.SWIN.WINDOW_SIZE = 5
    cfg.MODEL.SWIN.MLP_RATIO = 2.0
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 16
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 16
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 8
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 32
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 2
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
    cfg.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
    return cfg


def test_training_forward_gives_a_finite_loss_that_trains():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()
    labels = torch.randint(0, 5, (45, 70))
    labels[:5] = 255  # ignored
    batch = [
        {"image": torch.rand(3, 45, 70) * 255, "sem_seg": labels},
        {"image": torch.rand(3, 40, 64) * 255, "sem_seg": torch.randint(0, 5, (40, 64))},
    ]
    losses = model(batch)
    assert set(losses) == {"loss_maskformer"} and math.isfinite(losses["loss_maskformer"].item())
    losses["loss_maskformer"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_inference_equals_the_official_and_the_zoo_model(tmp_path):
    import_d2(CHECKPOINT, tmp_path / "zoo")
    zoo_model, _ = load_model_dir(tmp_path / "zoo")
    model = build_model(tiny_cfg())
    model.segmentor.load_state_dict(zoo_model.state_dict())
    model.eval()

    images, official = official_inputs()
    image = images[0] * model.pixel_std + model.pixel_mean  # back to the 0..255 image detectron2 gets
    with torch.no_grad():
        (result,) = model([{"image": image, "height": 45, "width": 70}])
        (resized,) = model([{"image": image, "height": 90, "width": 140}])
        zoo_probs = zoo_model.predict(images)[0]
    sem_seg = result["sem_seg"]
    assert sem_seg.shape == official.shape == (5, 45, 70)
    assert (sem_seg - official).abs().max() < 1e-4
    assert (sem_seg / sem_seg.sum(0, keepdim=True) - zoo_probs).abs().max() < 1e-4
    assert resized["sem_seg"].shape == (5, 90, 140)


def test_unsupported_keys_are_named():
    from zoo_core.errors import ConfigError

    cfg = tiny_cfg()
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 6
    with pytest.raises(ConfigError, match=r"MODEL\.MASK_FORMER\.ENC_LAYERS is 6"):
        build_model(cfg)
