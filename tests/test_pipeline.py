"""`zoo train` and `zoo run`: validation before work, end to end, resume after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_MODEL, zoo_environment

from zoo_core.data.synth import synthesize
from zoo_core.errors import ConfigError
from zoo_core.evaluation.predictions import read_prediction
from zoo_core.pipeline.schema import apply_overrides, load_pipeline


def tiny_pipeline(root: Path, weights: Path, **sections) -> dict:
    pipeline = {
        "data": {"root": str(root), "split": "val"},
        "model": TINY_MODEL,
        "train": {
            "max_iters": 6,
            "batch_size": 2,
            "lr": 1e-3,
            "log_every": 2,
            "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}],
        },
        "models": [{"name": "tiny", "weights": str(weights), "tta": {"type": "flip"}}],
        "runtime": {"amp": "none", "progress": False},
    }
    pipeline.update(sections)
    return pipeline


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, videos=5, frames=10, size=(64, 96), seed=3)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_root) -> tuple[Path, Path]:
    """A tiny model trained for a few real steps; returns (pipeline file, run directory)."""
    work = tmp_path_factory.mktemp("trained")
    run_dir = work / "model"
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(tiny_pipeline(synth_root, run_dir)))
    result = subprocess.run(
        [sys.executable, "-m", "zoo_core.cli", "train", str(path), "--out", str(run_dir)],
        env=zoo_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return path, run_dir


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --- validation before any work -------------------------------------------------------------


def test_yaml_typo_names_line_and_no_traceback(run_zoo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  root: x\n  split: [val\nmodels: []\n")
    result = run_zoo("run", bad, "--out", tmp_path / "out")
    assert result.returncode != 0
    assert "line" in result.stderr and "bad.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_key_names_path_and_allowed_keys(tmp_path, synth_root):
    data = tiny_pipeline(synth_root, tmp_path / "w")
    data["runtime"]["devise"] = "cpu"
    with pytest.raises(ConfigError) as info:
        load_pipeline(write_yaml(tmp_path / "p.yaml", data))
    message = str(info.value)
    assert "runtime.devise: unknown key" in message and "device" in message


def test_bad_choice_names_path_value_and_choices(tmp_path, synth_root):
    data = tiny_pipeline(synth_root, tmp_path / "w")
    data["models"][0]["tta"]["type"] = "flipp"
    with pytest.raises(ConfigError) as info:
        load_pipeline(write_yaml(tmp_path / "p.yaml", data))
    message = str(info.value)
    assert "models[0].tta.type" in message and "'flipp'" in message and "multiscale-flip" in message

    data["models"][0]["tta"]["type"] = "flip"
    data["runtime"]["amp"] = "int3"
    with pytest.raises(ConfigError) as info:
        load_pipeline(write_yaml(tmp_path / "p.yaml", data))
    assert "runtime.amp" in str(info.value) and "'bf16'" in str(info.value) and "int3" in str(info.value)


def test_set_overrides_parse_yaml_values_and_index_lists():
    raw = {"train": {"max_iters": 5}, "models": [{"name": "a", "weights": "w"}]}
    out = apply_overrides(
        raw, ["train.max_iters=50", "models.0.name=b", "runtime.amp=bf16", "train.betas=[0.95, 0.999]"]
    )
    assert out["train"]["max_iters"] == 50 and out["models"][0]["name"] == "b"
    assert out["runtime"] == {"amp": "bf16"} and out["train"]["betas"] == [0.95, 0.999]
    assert raw["train"]["max_iters"] == 5  # the input is not modified
    with pytest.raises(ConfigError, match="index"):
        apply_overrides(raw, ["models.3.name=x"])
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(raw, ["train.max_iters"])


def test_missing_weights_directory_is_a_clear_error(run_zoo, tmp_path, synth_root):
    path = write_yaml(tmp_path / "p.yaml", tiny_pipeline(synth_root, tmp_path / "nowhere"))
    result = run_zoo("run", path, "--out", tmp_path / "out")
    assert result.returncode != 0 and "nowhere" in result.stderr and "Traceback" not in result.stderr


# --- end to end -------------------------------------------------------------------------------


def test_train_writes_loadable_model_and_logs_real_steps(trained):
    _, run_dir = trained
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["backbone"]["type"] == "timm" and len(config["class_names"]) == 124
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [2, 4, 6]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)


def test_run_writes_palette_pngs_metrics_and_report(run_zoo, trained, synth_root, tmp_path):
    path, _ = trained
    out = tmp_path / "run"
    result = run_zoo("run", path, "--out", out, "--amp", "bf16")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"miou", "mvc8", "mvc16", "pixel_acc", "mean_class_acc", "fwiou", "per_class_iou"}
    assert 0.0 <= metrics["miou"] <= 1.0 and len(metrics["per_class_iou"]) == 124
    val_videos = (synth_root / "val.txt").read_text().split()
    for video in val_videos:
        frames = sorted(p.stem for p in (synth_root / "data" / video / "origin").iterdir())
        preds = sorted(p.stem for p in (out / "pred" / video).glob("*.png"))
        assert preds == frames
    first = next((out / "pred" / val_videos[0]).glob("*.png"))
    labels = read_prediction(first)
    assert labels.shape == (64, 96) and labels.max() < 124
    for name in ("summary.md", "per_class_iou.png", "confusion.png"):
        assert (out / "report" / name).stat().st_size > 0
    assert list((out / "report" / "overlays").glob("*.jpg"))
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"


def test_rerun_into_other_pipeline_directory_is_refused(run_zoo, trained, tmp_path):
    path, _ = trained
    out = tmp_path / "run"
    assert run_zoo("run", path, "--out", out).returncode == 0
    result = run_zoo("run", path, "--out", out, "--set", "models.0.tta.type=identity")
    assert result.returncode != 0 and "different pipeline" in result.stderr


def test_resume_after_kill_gives_the_uninterrupted_result(trained, tmp_path):
    path, _ = trained
    reference = tmp_path / "reference"
    command = [sys.executable, "-m", "zoo_core.cli", "run", str(path)]
    subprocess.run(
        command + ["--out", str(reference)], env=zoo_environment(), check=True, capture_output=True, timeout=300
    )

    out = tmp_path / "killed"
    process = subprocess.Popen(
        command + ["--out", str(out)], env=zoo_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "state").glob("*.npz")):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list((out / "state").glob("*.npz")))
    assert finished >= 1 and not (out / "metrics.json").exists(), "the run should be killed midway"

    result = subprocess.run(
        command + ["--out", str(out)], env=zoo_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "finished video(s) skipped" in result.stderr
    assert json.loads((out / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    for png in (reference / "pred").rglob("*.png"):
        assert np.array_equal(read_prediction(png), read_prediction(out / png.relative_to(reference)))


def test_corrupt_frame_mid_run_names_it_and_keeps_finished_videos(run_zoo, trained, tmp_path, synth_root):
    path, run_dir = trained
    root = tmp_path / "data"
    synthesize(root, videos=5, frames=10, size=(64, 96), seed=3)
    second = (root / "val.txt").read_text().split()[1]
    damaged = root / "data" / second / "origin" / "00000004.jpg"
    good_bytes = damaged.read_bytes()
    damaged.write_bytes(good_bytes[: len(good_bytes) // 3])  # a download cut short
    pipeline = yaml.safe_load(path.read_text())
    pipeline["data"]["root"] = str(root)
    pipeline_path = write_yaml(tmp_path / "p.yaml", pipeline)

    out = tmp_path / "run"
    result = run_zoo("run", pipeline_path, "--out", out)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert second in result.stderr and "00000004" in result.stderr
    assert len(list((out / "state").glob("*.npz"))) == 1, "the video finished before the damage is kept"
    assert not (out / "state" / f"{second}.npz").exists()

    damaged.write_bytes(good_bytes)
    result = run_zoo("run", pipeline_path, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "1 finished video(s) skipped" in result.stderr


def test_the_shipped_examples_validate(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    pipeline = load_pipeline("examples/quickstart.yaml")
    assert pipeline.model and pipeline.train and pipeline.models
    assert pipeline.train.transforms and pipeline.models[0].weights == "runs/quickstart-model"
