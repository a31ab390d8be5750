"""Proof: maskformer-mini trains with `zoo train` unchanged (SWA, resume, DDP) and beats chance on synthetic VSPW."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from zoo_maskformer import model_config

NUM_CLASSES = 124


def write_pipeline(tmp_path: Path, root: Path, **train) -> Path:
    pipeline = {
        "data": {"root": str(root), "split": "val"},
        "model": model_config("maskformer-mini", num_classes=NUM_CLASSES),
        "train": {
            "batch_size": 4,
            "lr": 1.0e-3,
            "warmup_iters": 10,
            "log_every": 1,
            "checkpoint_every": 0,
            "loss": {"type": "maskformer"},
            "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}],
            **train,
        },
        "models": [{"name": "maskformer-mini", "weights": str(tmp_path / "model")}],
        "output": {"overlays": 0},
        # One thread: small ops gain nothing from two, and lose a lot when the cores are shared.
        "runtime": {"device": "cpu", "amp": "none", "threads": 1, "progress": False},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


@pytest.mark.slow
def test_maskformer_mini_trains_with_swa_and_beats_chance(zoo_cli, synthetic_vspw, tmp_path):
    write_pipeline(
        tmp_path, synthetic_vspw.root, max_iters=150, swa={"iters": 20, "every": 10, "lr": 5.0e-4, "min_lr": 1.0e-5}
    )
    result = zoo_cli("train", "pipeline.yaml", "--out", "model")
    assert result.exit_code == 0, result.output
    log = losses(tmp_path / "model")
    assert len(log) == 170
    assert sum(log[-10:]) < 0.6 * sum(log[:10]), log

    result = zoo_cli("run", "pipeline.yaml", "--out", "run")
    assert result.exit_code == 0, result.output
    miou = json.loads((tmp_path / "run" / "metrics.json").read_text())["miou"]
    uniform, majority = synthetic_vspw.chance_miou("val")
    assert miou > 2 * max(uniform, majority), (miou, uniform, majority)


@pytest.mark.slow
def test_resume_after_a_crash_gives_the_same_weights(zoo_cli, synthetic_vspw, tmp_path):
    write_pipeline(tmp_path, synthetic_vspw.root, max_iters=6, warmup_iters=2, checkpoint_every=3, keep_checkpoints=0)
    assert zoo_cli("train", "pipeline.yaml", "--out", "full").exit_code == 0
    assert zoo_cli("train", "pipeline.yaml", "--out", "crashed").exit_code == 0
    # as if the process died after the last step, before the model was written: resume from iteration 3
    (tmp_path / "crashed" / "model.safetensors").unlink()
    (tmp_path / "crashed" / "config.json").unlink()
    result = zoo_cli("train", "pipeline.yaml", "--out", "crashed", "--resume")
    assert result.exit_code == 0, result.output
    assert "iteration 3" in result.output
    assert losses(tmp_path / "crashed") == losses(tmp_path / "full")
    full, resumed = weights(tmp_path / "full"), weights(tmp_path / "crashed")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_accumulating(synthetic_vspw, tmp_path):
    pipeline = write_pipeline(tmp_path, synthetic_vspw.root, max_iters=3, warmup_iters=1, batch_size=2)
    torchrun, zoo = shutil.which("torchrun"), shutil.which("zoo")
    assert torchrun and zoo, "torchrun and zoo must be on PATH"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}

    def train(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)

    ddp = train(torchrun, "--standalone", "--nproc_per_node=2", zoo, "train", str(pipeline), "--out", "ddp")
    assert ddp.returncode == 0, ddp.stderr
    assert "all 2 processes hold identical weights" in ddp.stderr
    single = train(sys.executable, "-m", "zoo_core.cli", "train", str(pipeline), "--out", "single",
                   "--set", "train.accum_steps=2")  # fmt: skip
    assert single.returncode == 0, single.stderr
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), abs=1e-4)
