"""examples/: the repository's pipelines run as their comments say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from zoo_core.data.synth import synthesize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_train_tiny_example_honours_max_iters_and_writes_the_model(run_zoo, tmp_path):
    pytest.importorskip("zoo_swin_ocr", reason="examples/train-tiny.yaml needs the zoo-swin-ocr plugin")
    synthesize(tmp_path / "data", videos=4, frames=6, size=(64, 96))
    out = tmp_path / "run"
    result = run_zoo(
        "train",
        EXAMPLES / "train-tiny.yaml",
        "--out",
        out,
        "--set",
        f"data.root={tmp_path / 'data'}",
        "--set",
        "train.max_iters=3",
        "--set",
        "train.warmup_iters=1",
        "--set",
        "runtime.progress=false",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert records[-1]["iter"] == 3
    config = json.loads((out / "config.json").read_text())
    assert config["iteration"] == 3 and config["model"]["backbone"] == {"type": "swin", "args": {"preset": "swin-mini"}}
    assert any(name.startswith("backbone.") for name in load_file(str(out / "model.safetensors")))
