"""The named recipes as the reports ran them, and ``train.global_batch``."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import TINY_MODEL
from safetensors.torch import load_file

from zoo_core.data.transforms import build_transforms
from zoo_core.engine.batches import resolve_global_batch
from zoo_core.engine.distributed import World
from zoo_core.engine.schedule import learning_rate
from zoo_core.errors import ConfigError
from zoo_core.pipeline.schema import Pipeline, TrainSpec
from zoo_core.recipes import load_recipe, recipe_names


def recipe(name: str) -> TrainSpec:
    return TrainSpec.model_validate(load_recipe(name))


def test_every_recipe_trains_on_the_reports_batch_of_16():
    assert set(recipe_names()) >= {"swin-part1", "swin-part2", "volo", "swin-uper-5th"}
    for name in recipe_names():
        spec = recipe(name)
        assert (spec.global_batch, spec.batch_size) == (16, 2), name
        if spec.transforms:
            build_transforms(spec.transforms)


def test_swin_uper_5th_schedule():
    spec = recipe("swin-uper-5th")
    assert (spec.max_iters, spec.lr, spec.weight_decay, spec.betas) == (160_000, 6e-5, 0.01, (0.9, 0.999))
    assert (spec.decoder_lr_mult, spec.schedule, spec.power, spec.min_lr) == (1.0, "poly", 1.0, 0.0)
    assert spec.loss.type == "ohem-ce" and spec.loss.args == {"thresh": 0.7, "min_kept": 200_000}
    crop = next(t for t in spec.transforms if t["type"] == "random-crop")
    assert crop["size"] == [640, 640]
    # warm-up 0 -> 6e-5 over 1,500 iterations, then linear (power 1) to 0 at 160k
    assert learning_rate(spec, 0) == pytest.approx(6e-5 / 1500)
    assert learning_rate(spec, 1499) == pytest.approx(6e-5)
    assert learning_rate(spec, 1500 + 158_500 // 2) == pytest.approx(3e-5)
    assert learning_rate(spec, 159_999) == pytest.approx(6e-5 / 158_500)


def mmcv_poly_with_linear_warmup(step: int, lr=6e-5, total=160_000, warmup=1500, ratio=1e-6) -> float:
    """mmcv's PolyLrUpdaterHook (power 1, min_lr 0) with warmup='linear', warmup_ratio 1e-6, by iteration."""
    regular = lr * (1 - step / total)
    if step >= warmup:
        return regular
    return regular * (1 - (1 - step / warmup) * (1 - ratio))


def test_swin_uper_5th_learning_rate_is_within_about_1_percent_of_mmcv():
    spec = recipe("swin-uper-5th")
    worst = max(abs(learning_rate(spec, s) - mmcv_poly_with_linear_warmup(s)) for s in range(0, 160_000, 7))
    # the warm-up's first step and the decay's span: at most (1 / 1500 + 1500 / 160k) of 6e-5, 1.0%
    assert 0.009 * 6e-5 < worst <= (1 / 1500 + 1500 / 160_000) * 6e-5


def test_volo_trains_on_480_by_720_crops():
    spec = recipe("volo")
    crop = next(t for t in spec.transforms if t["type"] == "random-crop")
    assert crop["size"] == [480, 720]
    assert [t["type"] for t in spec.transforms] == ["multiscale", "random-crop", "flip", "photometric"]
    assert (spec.betas, spec.lr, spec.schedule) == ((0.95, 0.999), 6e-5, "poly")


def pipeline_with(**train) -> Pipeline:
    return Pipeline.model_validate({"data": {"root": "data"}, "model": TINY_MODEL, "train": {"max_iters": 1, **train}})


@pytest.mark.parametrize(("processes", "accum"), [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_global_batch_gives_accum_steps_for_the_process_count(processes, accum):
    logged = []
    resolved = resolve_global_batch(pipeline_with(global_batch=16, batch_size=2), World(size=processes), logged.append)
    assert resolved.train.accum_steps == accum
    plural = "es" if processes > 1 else ""
    assert logged == [
        f"global batch 16 images per iteration (batch_size 2 x accum_steps {accum} x {processes} process{plural})"
    ]


def test_global_batch_errors():
    with pytest.raises(ConfigError, match=r"global_batch 16 is not a multiple of train.batch_size 2 x 3 processes = 6"):
        resolve_global_batch(pipeline_with(global_batch=16, batch_size=2), World(size=3), print)
    with pytest.raises(
        ConfigError, match="train.accum_steps 2 contradicts train.global_batch 16 .*needs accum_steps 8"
    ):
        resolve_global_batch(pipeline_with(global_batch=16, batch_size=2, accum_steps=2), World(), print)
    agreeing = pipeline_with(global_batch=16, batch_size=2, accum_steps=4)
    assert resolve_global_batch(agreeing, World(size=2), print).train.accum_steps == 4
    with pytest.raises(ValueError, match=r"global_batch \(16\) must be a multiple of batch_size \(3\)"):
        TrainSpec(max_iters=1, global_batch=16, batch_size=3)
    unset = pipeline_with(batch_size=2, accum_steps=3)
    assert resolve_global_batch(unset, World(size=2), print) is unset


def write_train(tmp_path, synthetic_vspw, name: str, **train) -> str:
    spec = {
        "data": {"root": str(synthetic_vspw.root), "split": "val"},
        "model": TINY_MODEL,
        "train": {
            "max_iters": 2,
            "batch_size": 2,
            "lr": 1e-3,
            "checkpoint_every": 0,
            "log_every": 1,
            "transforms": [{"type": "random-crop", "size": [48, 64]}, {"type": "flip"}],
            **train,
        },
        "runtime": {"device": "cpu", "amp": "none", "progress": False, "threads": 1},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return f"{name}.yaml"


def test_zoo_train_derives_accum_steps_and_logs_the_global_batch(zoo_cli, tmp_path, synthetic_vspw):
    derived = zoo_cli("train", write_train(tmp_path, synthetic_vspw, "derived", global_batch=4), "--out", "derived")
    assert derived.exit_code == 0, derived.output
    assert "global batch 4 images per iteration (batch_size 2 x accum_steps 2 x 1 process)" in derived.stderr
    explicit = zoo_cli("train", write_train(tmp_path, synthetic_vspw, "explicit", accum_steps=2), "--out", "explicit")
    assert explicit.exit_code == 0, explicit.output
    # the same global batches, the same weights; the model records the accum_steps it trained with
    a, b = (
        load_file(str(tmp_path / "derived" / "model.safetensors")),
        load_file(str(tmp_path / "explicit" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    config = json.loads((tmp_path / "derived" / "config.json").read_text())
    assert (config["train"]["global_batch"], config["train"]["accum_steps"]) == (4, 2)

    bad = write_train(tmp_path, synthetic_vspw, "bad", global_batch=4, accum_steps=3)
    result = zoo_cli("train", bad, "--out", "bad")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: train.accum_steps 3 contradicts train.global_batch 4")
    assert "Traceback" not in result.output and not (tmp_path / "bad").exists()
