"""``zoo maskformer import-hf`` against transformers' own MaskFormer: the same semantic scores, bad input refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zoo_core.model_dir import load_model_dir

transformers = pytest.importorskip("transformers")

NUM_CLASSES = 5


def tiny_transformers_maskformer(seed: int = 0):
    """A random transformers MaskFormer (Swin embed 8, window 4, 2 decoder layers) with every weight perturbed."""
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, MaskFormerSwinConfig

    backbone = MaskFormerSwinConfig(
        embed_dim=8,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
        window_size=4,
        mlp_ratio=2.0,
        drop_path_rate=0.0,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    decoder = {
        "model_type": "detr",
        "d_model": 16,
        "decoder_layers": 2,
        "decoder_attention_heads": 4,
        "decoder_ffn_dim": 32,
        "encoder_layers": 0,
        "num_queries": 6,
    }
    config = MaskFormerConfig(
        backbone_config=backbone,
        decoder_config=decoder,
        num_labels=NUM_CLASSES,
        num_queries=6,
        fpn_feature_size=32,
        mask_feature_size=16,
        id2label={i: name for i, name in enumerate("abcde")},
    )
    torch.manual_seed(seed)
    model = MaskFormerForInstanceSegmentation(config).eval()
    with torch.no_grad():  # no LayerNorm/GroupNorm left at 1/0: a swapped or dropped weight shows in the scores
        for param in model.parameters():
            param.add_(torch.randn_like(param), alpha=0.2)
    return model


def transformers_scores(model, images: torch.Tensor) -> torch.Tensor:
    """transformers' semantic scores: softmax(class) without no-object, sigmoid of the mask logits at the input size."""
    with torch.no_grad():
        out = model(pixel_values=images)
    classes = out.class_queries_logits.softmax(-1)[..., :-1]
    masks = F.interpolate(out.masks_queries_logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return torch.einsum("nqc,nqhw->nchw", classes, masks.sigmoid())


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    model = tiny_transformers_maskformer()
    folder = tmp_path_factory.mktemp("hf-maskformer")
    model.save_pretrained(folder)
    return model, folder


# 128x128: every stage's map (32, 16, 8, 4) a multiple of the window (4); 45x70: the patch embedding, the
# windows of every stage and two patch mergings pad
@pytest.mark.parametrize("size", [(128, 128), (45, 70)])
def test_import_hf_gives_transformers_scores(zoo_cli, hf_model_dir, tmp_path, size):
    model, folder = hf_model_dir
    result = zoo_cli("maskformer", "import-hf", str(folder), "-o", "zoo-model", "--size-divisibility", "0")
    assert result.exit_code == 0, result.output
    zoo_model, config = load_model_dir(tmp_path / "zoo-model")
    assert config["class_names"] == list("abcde")
    assert config["model"]["backbone"]["type"] == "maskformer-swin"

    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    reference = transformers_scores(model, images)
    with torch.no_grad():
        raw = zoo_model(images)[-1].to_scores(size)  # the same formula, before the normalisation predict adds
        probs = zoo_model.predict(images)
    assert raw.shape == reference.shape == (2, NUM_CLASSES, *size)
    assert (raw - reference).abs().max() < 1e-4
    assert (probs - reference / reference.sum(1, keepdim=True)).abs().max() < 1e-4
    assert reference.std() > 0.05  # the comparison is not between two near-constant maps


def test_default_size_divisibility_comes_from_the_preprocessor_config(zoo_cli, hf_model_dir, tmp_path):
    _, folder = hf_model_dir
    result = zoo_cli("maskformer", "import-hf", str(folder), "-o", "default")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "default" / "config.json").read_text())["model"]["size_divisibility"] == 32
    (folder / "preprocessor_config.json").write_text(json.dumps({"size_divisor": 64}))
    try:
        assert zoo_cli("maskformer", "import-hf", str(folder), "-o", "from-pre").exit_code == 0
    finally:
        (folder / "preprocessor_config.json").unlink()
    assert json.loads((tmp_path / "from-pre" / "config.json").read_text())["model"]["size_divisibility"] == 64


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "copy")


def test_refuses_a_model_that_is_not_maskformer(zoo_cli, hf_model_dir, tmp_path):
    bad = _copy(hf_model_dir[1], tmp_path)
    config = json.loads((bad / "config.json").read_text())
    config["model_type"] = "mask2former"
    (bad / "config.json").write_text(json.dumps(config))
    result = zoo_cli("maskformer", "import-hf", str(bad), "-o", "out")
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert (
        str(bad / "config.json") in result.output and "'model_type'" in result.output and "mask2former" in result.output
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("drop", "model.transformer_module.decoder.layers.1.fc2.bias"),
        ("extra", "model.transformer_module.decoder.layers.2.fc2.bias"),
        ("shape", "mask_embedder.1.0.weight"),
    ],
)
def test_refuses_missing_extra_or_misshapen_weights(zoo_cli, hf_model_dir, tmp_path, edit, named):
    from safetensors.torch import load_file, save_file

    bad = _copy(hf_model_dir[1], tmp_path)
    state = load_file(bad / "model.safetensors")
    if edit == "drop":
        del state[named]
    elif edit == "extra":
        state[named] = torch.zeros(16)
    else:
        state[named] = torch.zeros(16, 17)
    save_file(state, bad / "model.safetensors")
    result = zoo_cli("maskformer", "import-hf", str(bad), "-o", "out")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert str(bad / "model.safetensors") in result.output and repr(named) in result.output
    assert not (tmp_path / "out").exists()


def test_refuses_pickled_weights(zoo_cli, hf_model_dir, tmp_path):
    bad = _copy(hf_model_dir[1], tmp_path)
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    result = zoo_cli("maskformer", "import-hf", str(bad), "-o", "out")
    assert result.exit_code == 1
    assert "no *.safetensors weights" in result.output and "pytorch_model.bin" in result.output
    assert not (tmp_path / "out").exists()


# -- from a Hub repo: `zoo hub serve` on 127.0.0.1 stands in for the Hugging Face Hub ---------------------------


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The endpoint of a `zoo hub serve` started for this test (stopped after it); HF_HOME in tmp_path."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    log = tmp_path / "hub.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "zoo_core.cli", "hub", "serve", str(tmp_path / "hub"), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while "HF_ENDPOINT=" not in log.read_text():
            assert server.poll() is None and time.monotonic() < deadline, f"the hub did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield log.read_text().split("HF_ENDPOINT=", 1)[1].split()[0]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def upload(endpoint: str, repo_id: str, folder: Path) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)


def test_import_hf_from_a_hub_repo_gives_transformers_scores(zoo_cli, hf_model_dir, hub, tmp_path):
    model, folder = hf_model_dir
    upload(hub, "org/tiny-maskformer", folder)
    result = zoo_cli("maskformer", "import-hf", "org/tiny-maskformer", "-o", "zoo-model", env={"HF_ENDPOINT": hub})
    assert result.exit_code == 0, result.output
    zoo_model, config = load_model_dir(tmp_path / "zoo-model")
    assert config["class_names"] == list("abcde")
    assert config["model"]["size_divisibility"] == 32
    # downloaded from this hub (its log has the request) into HF_HOME in tmp_path, not into the user's cache
    assert "/org/tiny-maskformer/resolve/" in (tmp_path / "hub.log").read_text()
    assert list(tmp_path.glob("hf-home/hub/models--org--tiny-maskformer/snapshots/*/model.safetensors"))

    images = torch.randn(2, 3, 45, 70, generator=torch.Generator().manual_seed(3))
    reference = transformers_scores(model, images)
    with torch.no_grad():
        raw = zoo_model(images)[-1].to_scores((45, 70))
    assert raw.shape == reference.shape == (2, NUM_CLASSES, 45, 70)
    assert (raw - reference).abs().max() < 1e-4
    assert reference.std() > 0.05


def test_import_hf_refuses_a_hub_repo_with_only_pickled_weights(zoo_cli, hf_model_dir, hub, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_bytes((hf_model_dir[1] / "config.json").read_bytes())
    torch.save({"class_predictor.bias": torch.zeros(NUM_CLASSES + 1)}, pickled / "pytorch_model.bin")
    upload(hub, "org/pickled", pickled)
    result = zoo_cli("maskformer", "import-hf", "org/pickled", "-o", "out", env={"HF_ENDPOINT": hub})
    assert result.exit_code == 1, result.output  # DataError
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert "org/pickled" in result.output and "pytorch_model.bin" in result.output
    assert not (tmp_path / "out").exists()
    # the pickle was never downloaded (the hub logs every request), so nothing could unpickle it
    assert "/resolve/" not in (tmp_path / "hub.log").read_text()
    assert not list(tmp_path.glob("hf-home/**/pytorch_model.bin"))
