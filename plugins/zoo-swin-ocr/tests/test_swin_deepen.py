"""``zoo deepen``: every old weight kept, new blocks start as the identity, bad input refused."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from zoo_swin_ocr import model_config
from zoo_swin_ocr.deepen import (
    ZEROED,
    check_deepening,
    deepen_model_dir,
    deepen_state_dict,
    new_blocks,
)

from zoo_core.errors import ConfigError, DataError
from zoo_core.model_dir import build_segmentor, load_model_dir, save_model_dir

OLD, NEW = (2, 2, 2, 2), (4, 6, 4, 4)


def trained_like(config: dict, seed: int = 0) -> torch.nn.Module:
    """A model with random weights (zero-initialised biases included) and BN statistics away from their defaults."""
    torch.manual_seed(seed)
    model = build_segmentor(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param), alpha=0.02)
        model.train()(torch.randn(2, 3, 64, 96))
    return model.eval()


@pytest.fixture(scope="module")
def mini():
    config = model_config("swin-mini", num_classes=7)
    return config, trained_like(config)


@pytest.fixture(scope="module")
def saved_mini(tmp_path_factory, mini):
    config, model = mini
    out = tmp_path_factory.mktemp("swin-mini")
    save_model_dir(model, config, out, extra={"class_names": list("abcdefg"), "iteration": 100})
    return out


def test_new_blocks_follow_parity():
    # Appended after the old blocks; even indices copy old block 0 (plain windows), odd ones block 1 (shifted).
    assert new_blocks(OLD, NEW) == [
        (0, 2, 0),
        (0, 3, 1),
        (1, 2, 0),
        (1, 3, 1),
        (1, 4, 0),
        (1, 5, 1),
        (2, 2, 0),
        (2, 3, 1),
        (3, 2, 0),
        (3, 3, 1),
    ]
    assert new_blocks((2, 2, 18, 2), (4, 6, 20, 4))[6:8] == [(2, 18, 16), (2, 19, 17)]


def test_deepened_state_keeps_every_old_tensor_and_fills_the_deep_model(mini):
    _, model = mini
    old = model.state_dict()
    new = deepen_state_dict(old, OLD, NEW)
    for name, tensor in old.items():
        assert torch.equal(new[name], tensor), name
    assert set(new) == set(build_segmentor(model_config("swin-mini-deep", num_classes=7)).state_dict())
    for stage, block, source in new_blocks(OLD, NEW):
        src, dst = f"backbone.model.layers_{stage}.blocks.{source}.", f"backbone.model.layers_{stage}.blocks.{block}."
        copied = [k[len(dst) :] for k in new if k.startswith(dst)]
        assert sorted(ZEROED) == sorted(s for s in copied if s in ZEROED)
        for suffix in copied:
            if suffix in ZEROED:
                assert not new[dst + suffix].any() and old[src + suffix].any()
            else:
                assert torch.equal(new[dst + suffix], old[src + suffix])
    new["backbone.model.layers_1.blocks.5.norm1.weight"].add_(1)  # copies, not aliases of the old tensors
    new["backbone.model.layers_1.blocks.1.norm1.bias"].add_(1)
    assert not torch.equal(
        new["backbone.model.layers_1.blocks.5.norm1.weight"], old["backbone.model.layers_1.blocks.1.norm1.weight"]
    )
    assert not torch.equal(
        new["backbone.model.layers_1.blocks.1.norm1.bias"], old["backbone.model.layers_1.blocks.1.norm1.bias"]
    )


def test_deepened_model_predicts_what_the_old_one_did(mini):
    _, model = mini
    deep = build_segmentor(model_config("swin-mini-deep", num_classes=7)).eval()
    deep.load_state_dict(deepen_state_dict(model.state_dict(), OLD, NEW))
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for old_out, new_out in zip(model(images), deep(images)):
            torch.testing.assert_close(new_out, old_out, atol=1e-5, rtol=1e-5)
        # The new blocks do run: un-zeroing one projection changes the output.
        deep.backbone.model.layers_3.blocks[3].mlp.fc2.bias.fill_(0.5)
        assert not torch.allclose(deep(images)[-1], model(images)[-1], atol=1e-3)


@pytest.mark.parametrize(
    "depths, message",
    [
        ((4, 6, 20), r"four positive integers .* got \[4, 6, 20\]"),
        ((4, 6, 0, 4), "four positive integers"),
        ((4, 6, 1, 4), "stage 2 would shrink from 2 to 1"),
        ((3, 6, 4, 4), "stage 0 goes from 2 to 3 blocks; add an even number"),
        ((2, 2, 2, 2), "nothing to add"),
    ],
)
def test_bad_depths_are_refused(depths, message):
    with pytest.raises(ConfigError, match=message):
        check_deepening(OLD, depths)


def test_state_of_other_depths_is_refused(mini):
    _, model = mini
    with pytest.raises(DataError, match="do not hold a swin backbone of depths 2,2,4,2"):
        deepen_state_dict(model.state_dict(), (2, 2, 4, 2), (4, 6, 4, 4))


def test_deepen_model_dir_loads_every_old_weight(saved_mini, mini, tmp_path):
    _, model = mini
    done = deepen_model_dir(saved_mini, NEW, tmp_path / "deep")
    assert (done.old_depths, done.new_depths, done.added_blocks) == (OLD, NEW, 10)
    saved = json.loads((tmp_path / "deep" / "config.json").read_text())
    assert saved["model"]["backbone"] == {"type": "swin", "args": {"preset": "swin-mini", "depths": list(NEW)}}
    assert saved["model"]["heads"] == model_config("swin-mini", num_classes=7)["heads"]
    assert saved["class_names"] == list("abcdefg") and saved["iteration"] == 100
    assert saved["deepened_from"] == {"depths": list(OLD)}
    weights = load_file(tmp_path / "deep" / "model.safetensors")
    old = load_file(saved_mini / "model.safetensors")
    assert done.kept_tensors == len(old)
    assert all(torch.equal(weights[name], tensor) for name, tensor in old.items())
    deep, _ = load_model_dir(tmp_path / "deep")  # strict
    assert deep.backbone.depths == NEW
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(deep.predict(images), model.predict(images), atol=1e-5, rtol=1e-5)


def test_what_was_true_of_the_old_weights_file_only_is_not_copied(mini, tmp_path):
    # An fp16 copy (as zoo convert --dtype fp16 writes it) of an averaged model: the deepened weights are new, in fp32.
    config, model = mini
    extra = {
        "class_names": list("abcdefg"),
        "iteration": 100,
        "dtype": "fp16",
        "converted_from": "swin.pth",
        "averaged_from": ["runs/a", "runs/b"],
    }
    save_model_dir(copy.deepcopy(model).half(), config, tmp_path / "fp16", extra=extra)
    deepen_model_dir(tmp_path / "fp16", NEW, tmp_path / "deep")
    saved = json.loads((tmp_path / "deep" / "config.json").read_text())
    assert not {"dtype", "converted_from", "averaged_from"} & set(saved)
    assert (saved["class_names"], saved["iteration"]) == (list("abcdefg"), 100)
    stored = load_file(tmp_path / "deep" / "model.safetensors")
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float32}
    load_model_dir(tmp_path / "deep")


def test_deepen_refuses_other_backbones_and_existing_output(saved_mini, tiny_model_dir, tmp_path):
    # tiny_model_dir: a trained ResNet-10t model of the core's own components.
    with pytest.raises(
        ConfigError,
        match=r"config.json: the backbone is 'timm' \(from zoo-core\); zoo deepen adds "
        r"blocks to the 'swin' backbone of zoo-swin-ocr only",
    ):
        deepen_model_dir(tiny_model_dir, NEW, tmp_path / "out")
    with pytest.raises(ConfigError, match="already holds a model"):
        deepen_model_dir(saved_mini, NEW, saved_mini)
    with pytest.raises(DataError, match="config.json not found: .* is not a saved model directory"):
        deepen_model_dir(tmp_path, NEW, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_errors_name_the_problem(zoo_cli, saved_mini, tmp_path):
    result = zoo_cli("deepen", saved_mini, "--depths", "4,6,1,4", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "stage 2 would shrink from 2 to 1 blocks" in result.stderr
    result = zoo_cli("deepen", saved_mini, "--depths", "4,6,x,4", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "expected four comma-separated integers" in result.stderr
    result = zoo_cli("deepen", tmp_path, "--depths", "4,6,4,4", "-o", tmp_path / "o")
    assert result.exit_code == 1 and "is not a saved model directory" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_zoo_deepen_end_to_end(zoo_cli, saved_mini, mini, tmp_path):
    result = zoo_cli("deepen", saved_mini, "--depths", "4,6,4,4", "-o", tmp_path / "deep")
    assert result.exit_code == 0, result.output
    assert "depths 2,2,2,2 -> 4,6,4,4, 10 blocks added" in result.stdout
    deep, _ = load_model_dir(tmp_path / "deep")
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(deep.predict(images), mini[1].predict(images), atol=1e-5, rtol=1e-5)
