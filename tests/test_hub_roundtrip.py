"""Train tiny -> `zoo run` -> push to a local hub -> pull by card name into an empty cache -> same predictions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import zoo_environment

import zoo_core
from zoo_core.data.synth import synthesize
from zoo_core.data.vspw import VSPWDataset, normalize
from zoo_core.engine.trainer import train
from zoo_core.evaluation.predictions import read_prediction
from zoo_core.hub.cards import parse_card
from zoo_core.hub.client import pull
from zoo_core.hub.push import push
from zoo_core.hub.server import HubServer
from zoo_core.model_dir import load_model_dir
from zoo_core.pipeline.run import run_pipeline
from zoo_core.pipeline.schema import load_pipeline

SMALL_MODEL = {
    "num_classes": 124,
    "backbone": {"type": "timm", "args": {"model_name": "resnet10t", "out_indices": [0, 1]}},
    "heads": [
        {
            "type": "fcn",
            "args": {"in_index": [0, 1], "input_transform": "resize_concat", "channels": 16, "num_convs": 1},
        }
    ],
}


def zoo(*args, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "zoo_core.cli", *map(str, args)],
        env=zoo_environment(env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def trained_and_run(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(data root, pipeline file, trained model directory, `zoo run` output with metrics.json)."""
    work = tmp_path_factory.mktemp("roundtrip")
    root = work / "synth"
    synthesize(root, videos=3, frames=4, size=(64, 96), seed=5)
    pipeline = {
        "data": {"root": str(root), "split": "val"},
        "model": SMALL_MODEL,
        "train": {
            "max_iters": 4,
            "batch_size": 2,
            "lr": 1e-2,
            "log_every": 2,
            "transforms": [{"type": "random-crop", "size": [64, 96]}],
        },
        "models": [{"name": "tiny", "weights": str(work / "model"), "tta": {"type": "flip"}}],
        "runtime": {"amp": "none", "progress": False},
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    # in-process to keep the test fast; the CLI path is exercised by the run by card name below
    train(load_pipeline(path), work / "model", log=lambda message: None)
    run_pipeline(load_pipeline(path), work / "run", log=lambda message: None)
    return root, path, work / "model", work / "run"


@pytest.fixture
def published(trained_and_run, tmp_path, monkeypatch):
    """The trained model pushed to a fresh hub, its card in a registry folder; yields (hub, card)."""
    _, _, model_dir, run_out = trained_and_run
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = HubServer(tmp_path / "hub").start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "pusher-home"))
        result = push(model_dir, "team/roundtrip-model", metrics_path=run_out / "metrics.json")
        registry = tmp_path / "registry"
        registry.mkdir()
        (registry / "roundtrip-model.yaml").write_text(result.card.to_yaml())
        monkeypatch.setenv("ZOO_REGISTRY_PATH", str(registry))
        yield hub, result.card
    finally:
        hub.stop()


def test_pulled_model_predicts_exactly_like_the_trained_one(trained_and_run, published, tmp_path, monkeypatch):
    root, _, model_dir, run_out = trained_and_run
    _, card = published
    metrics = json.loads((run_out / "metrics.json").read_text())
    assert card.metrics.split == "val" and card.metrics.miou_tta == pytest.approx(metrics["miou"], abs=1e-9)

    empty_home = tmp_path / "puller-home"
    monkeypatch.setenv("HF_HOME", str(empty_home))
    resolved = pull("roundtrip-model")
    assert resolved.verified and resolved.revision == card.hub.revision and resolved.files == card.hub.files
    assert empty_home in resolved.path.parents, "pulled into the fresh cache"

    original, _ = load_model_dir(model_dir)
    pulled = zoo_core.load("roundtrip-model")  # from the cache now: the card's commit is there
    assert json.loads((resolved.path / "config.json").read_text())["class_names"] == card.class_names
    dataset = VSPWDataset(root, "val")
    frames = [normalize(f.image) for f in dataset.iter_video(dataset.videos[0])]
    images = torch.stack(frames)
    with torch.no_grad():
        expected, found = original.predict(images), pulled.predict(images)
    assert expected.shape == (len(frames), 124, 64, 96)
    assert torch.equal(expected, found)


def test_zoo_run_with_the_card_name_gives_the_same_pngs_and_a_lock(trained_and_run, published, tmp_path):
    _, path, _, run_out = trained_and_run
    hub, card = published
    out = tmp_path / "run-by-name"
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "fresh-home"),
        "ZOO_REGISTRY_PATH": str(tmp_path / "registry"),
    }
    zoo("run", path, "--out", out, "--set", f"models.0.weights={card.name}", env=env)

    reference = sorted(p.relative_to(run_out / "pred") for p in (run_out / "pred").rglob("*.png"))
    assert reference and sorted(p.relative_to(out / "pred") for p in (out / "pred").rglob("*.png")) == reference
    for png in reference:
        assert np.array_equal(read_prediction(run_out / "pred" / png), read_prediction(out / "pred" / png))
    assert json.loads((out / "metrics.json").read_text()) == json.loads((run_out / "metrics.json").read_text())
    lock = json.loads((out / "zoo.lock").read_text())["weights"][card.name]
    assert lock == {
        "repo_id": "team/roundtrip-model",
        "revision": card.hub.revision,
        "filename": "model.safetensors",
        "files": card.hub.files,
    }
    assert parse_card(yaml.safe_load(card.to_yaml()), "card") == card


def test_a_pipeline_pinned_to_its_lock_ignores_a_newer_card_and_refuses_other_bytes(
    trained_and_run, published, tmp_path
):
    from safetensors.torch import load_file, save_file

    _, path, model_dir, _ = trained_and_run
    hub, card = published
    registry = tmp_path / "registry"
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home"), "ZOO_REGISTRY_PATH": str(registry)}
    first = tmp_path / "first"
    zoo("run", path, "--out", first, "--set", f"models.0.weights={card.name}", env=env)

    # New weights in the same repository; the card now names the new commit.
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "config.json").write_text((model_dir / "config.json").read_text())
    tensors = load_file(model_dir / "model.safetensors")
    tensors = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in tensors.items()}
    save_file(tensors, changed / "model.safetensors")
    newer = push(changed, "team/roundtrip-model").card
    assert newer.hub.revision != card.hub.revision
    (registry / "roundtrip-model.yaml").write_text(newer.to_yaml())

    pinned = tmp_path / "pinned"
    zoo(
        "run",
        path,
        "--out",
        pinned,
        "--set",
        f"models.0.weights={card.name}",
        "--set",
        f"lock={first / 'zoo.lock'}",
        env=env,
    )
    assert json.loads((pinned / "zoo.lock").read_text()) == json.loads((first / "zoo.lock").read_text())
    for png in (first / "pred").rglob("*.png"):
        assert np.array_equal(read_prediction(png), read_prediction(pinned / png.relative_to(first)))

    tampered = json.loads((first / "zoo.lock").read_text())
    tampered["weights"][card.name]["files"]["model.safetensors"] = "0" * 64
    lock_path = tmp_path / "tampered.lock"
    lock_path.write_text(json.dumps(tampered))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo_core.cli",
            "run",
            str(path),
            "--out",
            str(tmp_path / "t"),
            "--set",
            f"models.0.weights={card.name}",
            "--set",
            f"lock={lock_path}",
        ],
        env=zoo_environment(env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "sha256" in result.stderr and "tampered.lock" in result.stderr and "0" * 64 in result.stderr
