"""Segmentor assembly (tiny and the full Swin-L + FCN + OCR recipe), and the saved model directory."""

from __future__ import annotations

import json

import pytest
import torch

from zoo_core.components.heads import FCNHead, OCRHead
from zoo_core.components.losses import CrossEntropyLoss
from zoo_core.components.segmentor import Segmentor
from zoo_core.errors import ConfigError, DataError
from zoo_core.interfaces import MaskClassification
from zoo_core.model_dir import atomic_path, atomic_write_bytes, build_segmentor, load_model_dir, save_model_dir


def ocr_cascade(
    backbone_args: dict, num_classes: int = 5, channels: int = 16, ocr_channels: int = 8, in_index=(1, 2, 3)
) -> dict:
    head_input = {"in_index": list(in_index), "input_transform": "resize_concat"}
    return {
        "num_classes": num_classes,
        "backbone": {"type": "timm", "args": backbone_args},
        "heads": [
            {"type": "fcn", "args": {**head_input, "channels": channels // 2, "num_convs": 1, "loss_weight": 0.4}},
            {"type": "ocr", "args": {**head_input, "channels": channels, "ocr_channels": ocr_channels}},
        ],
    }


TINY_SWIN = {
    "model_name": "swin_tiny_patch4_window7_224",
    "embed_dim": 32,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 2, 4, 8],
}
TINY_RESNET = {"model_name": "resnet18", "out_indices": [1, 2, 3, 4]}


@pytest.fixture(scope="module")
def tiny_swin_config() -> dict:
    return ocr_cascade(TINY_SWIN)


def test_tiny_swin_ocr_cascade_shapes_and_gradients(tiny_swin_config):
    torch.manual_seed(0)
    model = build_segmentor(tiny_swin_config)
    assert [h.in_channels for h in model.heads] == [64 + 128 + 256] * 2
    images = torch.randn(2, 3, 64, 96)
    fcn_out, ocr_out = model(images)
    assert fcn_out.shape == ocr_out.shape == (2, 5, 8, 12)  # stride 8: the first selected map
    target = torch.randint(0, 5, (2, 64, 96))
    ce = CrossEntropyLoss()
    ce(ocr_out, target).backward()
    # The OCR loss alone reaches the FCN head: its logits are OCR's object regions.
    assert model.heads[0].conv_seg.weight.grad.abs().sum() > 0
    assert model.heads[1].conv_seg.weight.grad.abs().sum() > 0
    assert model.backbone.model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_resnet_segmentor_predict_is_probabilities_at_input_size():
    model = build_segmentor(ocr_cascade(TINY_RESNET, num_classes=3)).eval()
    with torch.no_grad():
        images = torch.randn(1, 3, 64, 93)
        probs = model.predict(images)
        assert probs.shape == (1, 3, 64, 93)
        torch.testing.assert_close(probs.sum(1), torch.ones(1, 64, 93))
        logits = model(images)[-1]
        upsampled = torch.nn.functional.interpolate(logits, size=(64, 93), mode="bilinear", align_corners=False)
        torch.testing.assert_close(probs, upsampled.softmax(1))


class MaskHead(torch.nn.Module):
    num_classes = 2
    loss_weight = 1.0

    def forward(self, features, prev_output):
        class_logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])
        mask_logits = torch.zeros(1, 2, 2, 2)
        return MaskClassification(class_logits, mask_logits)


def test_predict_normalises_mask_classification_scores():
    backbone = torch.nn.Identity()
    probs = Segmentor(backbone, [MaskHead()]).predict(torch.zeros(1, 3, 2, 2))
    scores = MaskHead()(None, None).to_scores()
    torch.testing.assert_close(probs, scores / scores.sum(1, keepdim=True))
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 2, 2))


def test_full_size_swin_large_fcn_ocr_on_meta():
    import timm

    swin_large = {
        "model_name": "swin_large_patch4_window12_384",
        "embed_dim": 192,
        "depths": [2, 2, 18, 2],
        "num_heads": [6, 12, 24, 48],
        "window_size": 12,
    }
    config = ocr_cascade(swin_large, num_classes=124, channels=1024, ocr_channels=512)
    config["heads"][0]["args"].update(channels=512, num_convs=2)
    with torch.device("meta"):
        model = build_segmentor(config)
        reference = timm.create_model("swin_large_patch4_window12_384")
    fcn, ocr = model.heads
    assert model.backbone.channels == [192, 384, 768, 1536]
    assert model.backbone.strides == [4, 8, 16, 32]
    assert isinstance(fcn, FCNHead) and isinstance(ocr, OCRHead)
    assert fcn.in_channels == ocr.in_channels == 384 + 768 + 1536 == 2688
    assert fcn.loss_weight == 0.4 and ocr.loss_weight == 1.0
    assert tuple(fcn.convs[0].conv.weight.shape) == (512, 2688, 3, 3)
    assert tuple(fcn.conv_cat.conv.weight.shape) == (512, 2688 + 512, 3, 3)
    assert tuple(ocr.bottleneck.conv.weight.shape) == (1024, 2688, 3, 3)
    block = ocr.object_context_block
    assert tuple(block.query_project[0].conv.weight.shape) == (512, 1024, 1, 1)
    assert tuple(block.out_project[0].conv.weight.shape) == (1024, 512, 1, 1)
    assert tuple(block.bottleneck.conv.weight.shape) == (1024, 2048, 1, 1)
    assert tuple(ocr.conv_seg.weight.shape) == (124, 1024, 1, 1)
    # The feature extractor is timm's Swin-L without its classifier and final norm.
    feature_part = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith(("head.", "norm.")))
    assert sum(p.numel() for p in model.backbone.parameters()) == feature_part


def test_build_errors_name_the_field():
    with pytest.raises(ConfigError, match="model.num_classes"):
        build_segmentor({"num_classes": 0, "backbone": {"type": "timm"}, "heads": [{"type": "fcn"}]})
    with pytest.raises(ConfigError, match=r"model.heads\[1\]"):
        build_segmentor({**ocr_cascade(TINY_RESNET), "heads": [{"type": "fcn"}, {"name": "ocr"}]})
    with pytest.raises(ConfigError, match="unknown head 'nope'"):
        build_segmentor({**ocr_cascade(TINY_RESNET), "heads": [{"type": "nope"}]})


# --- model directory ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_swin(tmp_path_factory, tiny_swin_config):
    torch.manual_seed(1)
    model = build_segmentor(tiny_swin_config)
    model.train()
    model(torch.randn(2, 3, 64, 96))  # move the BN running statistics away from their defaults
    model.eval()
    out_dir = tmp_path_factory.mktemp("model")
    save_model_dir(model, tiny_swin_config, out_dir, extra={"classes": ["a", "b", "c", "d", "e"]})
    return model, out_dir


def test_save_load_round_trip_is_identical(saved_swin, tiny_swin_config):
    model, out_dir = saved_swin
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out_dir / "config.json").read_text())
    assert config["format"] == "zoo-model/1"
    assert config["model"] == tiny_swin_config
    assert config["classes"] == ["a", "b", "c", "d", "e"]
    assert "zoo-core" in config["plugins"] and config["zoo_version"]
    loaded, loaded_config = load_model_dir(out_dir)
    assert loaded_config == config and not loaded.training
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded.predict(images), model.predict(images))


def test_strict_load_reports_missing_and_unexpected(saved_swin, tmp_path):
    from safetensors.torch import load_file, save_file

    _, out_dir = saved_swin
    state = load_file(out_dir / "model.safetensors")
    state["heads.1.extra_layer.weight"] = torch.zeros(1)
    del state["heads.0.conv_seg.bias"]
    (tmp_path / "config.json").write_bytes((out_dir / "config.json").read_bytes())
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(
        DataError,
        match=r"model\.safetensors.*1 missing key\(s\): heads\.0\.conv_seg\.bias; "
        r"1 unexpected key\(s\): heads\.1\.extra_layer\.weight",
    ):
        load_model_dir(tmp_path)


def test_truncated_or_missing_files_give_clear_errors(saved_swin, tmp_path):
    _, out_dir = saved_swin
    (tmp_path / "config.json").write_bytes((out_dir / "config.json").read_bytes())
    with pytest.raises(DataError, match="model.safetensors not found"):
        load_model_dir(tmp_path)
    data = (out_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"model\.safetensors is truncated or corrupt.*re-train"):
        load_model_dir(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(DataError, match="config.json not found"):
        load_model_dir(tmp_path)


def test_missing_plugin_is_named(saved_swin, tmp_path):
    _, out_dir = saved_swin
    config = json.loads((out_dir / "config.json").read_text())
    config["model"]["heads"][1]["type"] = "unet-ocr"
    config["plugins"]["zoo-volo-unet-ocr"] = "0.1.0"
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((out_dir / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="unknown head 'unet-ocr'.*zoo-volo-unet-ocr 0.1.0"):
        load_model_dir(tmp_path)


def test_atomic_path_replaces_on_success_only(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"first")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"second")
    assert target.read_bytes() == b"second" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
