"""The training engine: schedules, recipes, exact resume, interruption, accumulation, SWA, averaging, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_MODEL, zoo_environment
from safetensors.torch import load_file, save_file

from zoo_core.data.synth import synthesize
from zoo_core.engine.averaging import average_model_dirs
from zoo_core.engine.run_dir import truncate_log
from zoo_core.engine.schedule import checkpoint_due, learning_rate, param_groups, swa_snapshot_due
from zoo_core.errors import ConfigError, DataError
from zoo_core.pipeline.schema import TrainSpec, load_pipeline
from zoo_core.recipes import load_recipe, recipe_names

TRANSFORMS = [{"type": "random-crop", "size": [48, 64]}, {"type": "flip"}, {"type": "photometric"}]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engine") / "synth"
    synthesize(root, videos=4, frames=6, size=(64, 96), seed=3)
    return root


def write_pipeline(folder: Path, data_root: Path, **train) -> Path:
    spec = {
        "max_iters": 8,
        "batch_size": 2,
        "lr": 1e-3,
        "warmup_iters": 2,
        "transforms": TRANSFORMS,
        "log_every": 1,
        "checkpoint_every": 4,
        **train,
    }
    path = folder / "train.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"root": str(data_root)},
                "model": TINY_MODEL,
                "train": spec,
                "runtime": {"amp": "none", "progress": False, "threads": 1},
            }
        )
    )
    return path


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        if atol:
            torch.testing.assert_close(value, b[name], atol=atol, rtol=0, msg=name)
        else:
            assert torch.equal(value, b[name]), name


# -- schedule and recipes ---------------------------------------------------------------


def spec_of(**values) -> TrainSpec:
    return TrainSpec.model_validate(values)


def test_swin_part1_schedule_matches_the_report():
    # 0 -> 6e-6 linearly over 1500 iterations, then linearly to 0 at 160k; decoder 10x.
    spec = spec_of(**load_recipe("swin-part1"))
    assert learning_rate(spec, 0) == pytest.approx(6e-6 / 1500)
    assert learning_rate(spec, 749) == pytest.approx(3e-6)
    assert learning_rate(spec, 1499) == pytest.approx(6e-6)
    assert learning_rate(spec, 1500) == pytest.approx(6e-6)
    assert learning_rate(spec, 1500 + 158500 // 2) == pytest.approx(3e-6)
    assert learning_rate(spec, 159999) == pytest.approx(6e-6 / 158500)
    assert (spec.decoder_lr_mult, spec.weight_decay, spec.betas) == (10.0, 0.02, (0.9, 0.999))


def test_swin_part2_and_volo_schedules():
    part2 = spec_of(**load_recipe("swin-part2"))
    assert learning_rate(part2, 0) == pytest.approx(1e-5)
    assert learning_rate(part2, 10000) == pytest.approx(0.75e-5)
    assert (part2.max_iters, part2.decoder_lr_mult, part2.warmup_iters) == (40000, 1.0, 0)
    volo = spec_of(**load_recipe("volo"))
    assert volo.betas == (0.95, 0.999)
    assert learning_rate(volo, 0) == pytest.approx(6e-5)
    assert learning_rate(volo, 80000) == pytest.approx(6e-5 * 0.5**0.9)


def test_swa_cycles_fall_linearly_and_restart():
    spec = spec_of(max_iters=100, lr=0.1, swa={"iters": 20, "every": 5, "lr": 1e-3, "min_lr": 1e-5})
    cycle = [learning_rate(spec, s) for s in range(100, 110)]
    assert cycle[0] == pytest.approx(1e-3) and cycle[4] == pytest.approx(1e-5)
    assert cycle[2] == pytest.approx((1e-3 + 1e-5) / 2)
    assert cycle[5:] == pytest.approx(cycle[:5])
    with pytest.raises(ValueError, match="multiple of swa.every"):
        spec_of(max_iters=10, swa={"iters": 7, "every": 5, "lr": 1e-3})


def test_recipe_fills_in_under_the_pipeline_keys(tmp_path, data_root):
    path = write_pipeline(tmp_path, data_root, recipe="swin-part2", max_iters=500, lr=2e-5)
    train = load_pipeline(path).train
    assert (train.max_iters, train.lr, train.weight_decay, train.schedule) == (500, 2e-5, 0.02, "linear")
    assert set(recipe_names()) >= {"swin-part1", "swin-part2", "volo"}
    with pytest.raises(ConfigError, match="unknown recipe 'swin-part9'.*swin-part1"):
        load_pipeline(path, ["train.recipe=swin-part9"])


def test_checkpoints_and_swa_snapshots_fall_on_the_planned_iterations():
    swa = {"iters": 4, "every": 2, "lr": 1e-3}
    spec = TrainSpec(max_iters=8, warmup_iters=0, checkpoint_every=4, swa=swa)  # 12 iterations in all
    # Every 4th iteration but the last (which writes the model), and where SWA starts; a snapshot ends each cycle.
    assert [s for s in range(1, 13) if checkpoint_due(spec, s)] == [4, 8]
    assert [s for s in range(1, 13) if swa_snapshot_due(spec, s)] == [10, 12]
    only_swa_start = TrainSpec(max_iters=8, warmup_iters=0, checkpoint_every=0, swa=swa)
    assert [s for s in range(1, 13) if checkpoint_due(only_swa_start, s)] == [8]
    plain = TrainSpec(max_iters=9, warmup_iters=0, checkpoint_every=3)
    assert [s for s in range(1, 10) if checkpoint_due(plain, s)] == [3, 6]
    assert not any(swa_snapshot_due(plain, s) for s in range(1, 10))


def test_param_groups_split_backbone_decoder_and_no_decay():
    from zoo_core.model_dir import build_segmentor

    model = build_segmentor(TINY_MODEL)
    spec = spec_of(max_iters=10, lr=1e-3, decoder_lr_mult=10, weight_decay=0.05)
    groups = {g["name"]: g for g in param_groups(model, spec)}
    assert set(groups) == {"backbone", "backbone.no_decay", "decoder", "decoder.no_decay"}
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert all(id(p) in backbone_ids for p in groups["backbone"]["params"] + groups["backbone.no_decay"]["params"])
    assert all(p.ndim > 1 for p in groups["decoder"]["params"])
    assert groups["decoder"]["lr_mult"] == 10 and groups["decoder.no_decay"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


# -- runs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_root) -> Path:
    """An uninterrupted 8-iteration run."""
    folder = tmp_path_factory.mktemp("reference")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo_core.cli",
            "train",
            str(write_pipeline(folder, data_root)),
            "--out",
            str(folder / "run"),
        ],
        env=zoo_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return folder / "run"


def test_run_writes_model_log_and_pruned_checkpoints(reference_run):
    records = log_records(reference_run)
    assert [r["iter"] for r in records] == list(range(1, 9))
    assert all(r["loss"] > 0 for r in records)
    # warm-up 2 iterations, then poly decay to 0 at 8
    assert [r["lr"] for r in records[:3]] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert (reference_run / "checkpoints" / "iter_0000004" / "optimizer.safetensors").is_file()
    config = json.loads((reference_run / "config.json").read_text())
    assert config["iteration"] == 8 and len(config["class_names"]) == 124


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, data_root, reference_run, run_zoo):
    pipeline = write_pipeline(tmp_path, data_root, checkpoint_every=100)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "zoo_core.cli", "train", str(pipeline), "--out", str(out)],
        env=zoo_environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it was interrupted"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    (checkpoint,) = (out / "checkpoints").iterdir()
    stopped_at = int(checkpoint.name.split("_")[1])
    assert 3 <= stopped_at < 8
    assert not (out / "model.safetensors").exists()

    refused = run_zoo("train", pipeline, "--out", out)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    changed = run_zoo("train", pipeline, "--out", out, "--resume", "--set", "train.lr=0.5")
    assert changed.returncode == 2 and "train.lr" in changed.stderr

    resumed = run_zoo("train", pipeline, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(out), weights(reference_run))
    assert [r["iter"] for r in log_records(out)] == list(range(1, 9))
    assert [r["loss"] for r in log_records(out)] == [r["loss"] for r in log_records(reference_run)]

    again = run_zoo("train", pipeline, "--out", out, "--resume")
    assert again.returncode == 0 and "nothing to do" in again.stderr


@pytest.mark.slow
def test_resume_after_a_crash_recomputes_from_the_last_checkpoint(tmp_path, data_root, reference_run, run_zoo):
    out = tmp_path / "run"
    pipeline = write_pipeline(tmp_path, data_root)
    finished = run_zoo("train", pipeline, "--out", out, "--set", "train.keep_checkpoints=0")
    assert finished.returncode == 0, finished.stderr
    # As if the process died after iteration 8 was logged but before the model was written:
    # only the checkpoint of iteration 4 survives, and the log went further than it.
    (out / "model.safetensors").unlink()
    (out / "config.json").unlink()
    resumed = run_zoo("train", pipeline, "--out", out, "--resume", "--set", "train.keep_checkpoints=0")
    assert resumed.returncode == 0, resumed.stderr
    assert "iteration 4" in resumed.stderr
    assert [r["iter"] for r in log_records(out)] == list(range(1, 9))
    assert_same_weights(weights(out), weights(reference_run))


@pytest.mark.slow
def test_resume_drops_a_torn_last_log_line_and_names_an_unreadable_run_record(
    tmp_path, data_root, reference_run, run_zoo
):
    pipeline = write_pipeline(tmp_path, data_root)
    out = Path(shutil.copytree(reference_run, tmp_path / "run"))
    # Killed while writing the log record of iteration 6: the checkpoint of iteration 4 is the last one.
    (out / "model.safetensors").unlink()
    (out / "config.json").unlink()
    lines = (out / "train_log.jsonl").read_text().splitlines()
    (out / "train_log.jsonl").write_text("".join(line + "\n" for line in lines[:5]) + lines[5][:20])
    record = (out / "train_run.json").read_text()
    (out / "train_run.json").write_text(record[: len(record) // 2])  # torn too

    refused = run_zoo("train", pipeline, "--out", out, "--resume")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith(f"error: {out / 'train_run.json'} is unreadable (")
    assert line.endswith("restore it, delete it to resume without that check, or train into another --out")

    (out / "train_run.json").write_text(record)
    resumed = run_zoo("train", pipeline, "--out", out, "--resume")
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "iteration 4" in resumed.stderr
    assert [r["iter"] for r in log_records(out)] == list(range(1, 9))
    assert [r["loss"] for r in log_records(out)] == [r["loss"] for r in log_records(reference_run)]
    assert_same_weights(weights(out), weights(reference_run))


def test_truncating_the_log_keeps_whole_records_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "train_log.jsonl"
    records = [json.dumps({"iter": i, "loss": 1.0}) for i in range(1, 5)]
    log.write_text("\n".join(records))  # the last record lacks its newline: the next one must not join it
    truncate_log(log, 4)
    assert log.read_text() == "".join(r + "\n" for r in records)
    log.write_text("".join(r + "\n" for r in records) + '{"iter": 5, "lo')
    truncate_log(log, 3)
    assert log.read_text() == "".join(r + "\n" for r in records[:3])
    torn = b'{"iter": 5, "note": "\xe2\x82'  # cut inside a character, after two blank lines
    log.write_bytes("".join(r + "\n" for r in records).encode() + b"\n\n" + torn)
    truncate_log(log, 4)
    assert log.read_text() == "".join(r + "\n" for r in records)
    for bad in ("[1, 2]", '{"iter": "2"}', "{not json"):
        log.write_text(records[0] + "\n" + bad + "\n" + records[1] + "\n")
        with pytest.raises(DataError) as err:
            truncate_log(log, 4)
        assert str(err.value).startswith(f"{log}, line 2: not a record of zoo train ({bad!r}); delete that line")
        assert log.read_text() == records[0] + "\n" + bad + "\n" + records[1] + "\n"  # left as it was


@pytest.mark.slow
def test_accumulation_equals_a_larger_batch_split_in_micro_batches(tmp_path, data_root, run_zoo):
    # batch 4 in one micro-batch vs 2 micro-batches of 2: same images per step, BatchNorm sees
    # different batches, so only the first step's loss is compared exactly.
    pipeline = write_pipeline(tmp_path, data_root, max_iters=2, checkpoint_every=0)
    one = run_zoo("train", pipeline, "--out", tmp_path / "one", "--set", "train.batch_size=4")
    two = run_zoo("train", pipeline, "--out", tmp_path / "two", "--set", "train.accum_steps=2")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = log_records(tmp_path / "one"), log_records(tmp_path / "two")
    assert a[0]["epoch"] == b[0]["epoch"] == 0
    assert abs(a[0]["loss"] - b[0]["loss"]) < 0.05 * a[0]["loss"]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_accumulating(tmp_path, data_root, run_zoo):
    pipeline = write_pipeline(tmp_path, data_root, max_iters=4, checkpoint_every=0)
    # torchrun on the installed `zoo` entry point, as a cluster job would start it
    torchrun, zoo = shutil.which("torchrun"), shutil.which("zoo")
    assert torchrun and zoo, "torchrun and zoo must be on PATH (pip install -e .)"
    ddp = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", zoo, "train", str(pipeline), "--out", str(tmp_path / "ddp")],
        env=zoo_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ddp.returncode == 0, ddp.stderr
    assert "all 2 processes hold identical weights" in ddp.stderr
    single = run_zoo("train", pipeline, "--out", tmp_path / "single", "--set", "train.accum_steps=2")
    assert single.returncode == 0, single.stderr
    plain = run_zoo("train", pipeline, "--out", tmp_path / "plain")  # half the global batch
    assert plain.returncode == 0, plain.stderr
    a, b, c = (weights(tmp_path / name) for name in ("ddp", "single", "plain"))
    parameters = [n for n in a if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert any(not torch.allclose(a[n], c[n], atol=2e-5, rtol=1e-4) for n in parameters)
    for name in parameters:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)
    assert [r["loss"] for r in log_records(tmp_path / "ddp")] == pytest.approx(
        [r["loss"] for r in log_records(tmp_path / "single")], abs=1e-4
    )


@pytest.mark.slow
def test_nproc_run_interrupted_by_ctrl_c_keeps_a_checkpoint_and_resumes(tmp_path, data_root, run_zoo):
    # Batch 6: iterations long enough that torchrun's own SIGINT to the workers lands mid-iteration.
    pipeline = write_pipeline(tmp_path, data_root, max_iters=100, checkpoint_every=0, batch_size=6)
    out = tmp_path / "run"
    # A terminal's Ctrl-C goes to the whole process group: zoo, torchrun and both workers.
    process = subprocess.Popen(
        [sys.executable, "-m", "zoo_core.cli", "train", str(pipeline), "--out", str(out), "--nproc", "2"],
        env=zoo_environment(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 180
    while not (log.is_file() and log.read_text().count("\n") >= 3):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it was interrupted"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode != 0
    assert "interrupted by SIGINT" in stderr and "--resume" in stderr
    (checkpoint,) = (out / "checkpoints").iterdir()
    stopped_at = int(checkpoint.name.split("_")[1])
    assert 3 <= stopped_at < 100

    resumed = run_zoo("train", pipeline, "--out", out, "--nproc", "2", "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(iteration {stopped_at})" in resumed.stderr
    assert "all 2 processes hold identical weights" in resumed.stderr
    assert [r["iter"] for r in log_records(out)] == list(range(1, 101))


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path, data_root):
    pipeline = write_pipeline(tmp_path, data_root, max_iters=200, checkpoint_every=0)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "zoo_core.cli", "train", str(pipeline), "--out", str(out)],
        env=zoo_environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.terminate()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr
    (checkpoint,) = (out / "checkpoints").iterdir()
    assert (checkpoint / "optimizer.safetensors").is_file() and (checkpoint / "model.safetensors").is_file()


@pytest.mark.slow
def test_swa_averages_the_cycle_snapshots(tmp_path, data_root, run_zoo):
    pipeline = write_pipeline(
        tmp_path, data_root, max_iters=4, checkpoint_every=0, swa={"iters": 4, "every": 2, "lr": 5e-4, "min_lr": 1e-5}
    )
    out = tmp_path / "run"
    result = run_zoo("train", pipeline, "--out", out)
    assert result.returncode == 0, result.stderr
    snapshots = sorted((out / "swa").iterdir())
    assert [s.name for s in snapshots] == ["iter_0000006", "iter_0000008"]
    tensors = [load_file(str(s / "model.safetensors")) for s in snapshots]
    final = weights(out)
    for name, value in final.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (tensors[0][name].double() + tensors[1][name].double()).div(2).float())
    assert [r["lr"] for r in log_records(out)][4:] == pytest.approx([5e-4, 1e-5, 5e-4, 1e-5])
    assert (out / "checkpoints" / "iter_0000004").is_dir()  # the model before SWA is kept
    assert json.loads((out / "config.json").read_text())["swa_snapshots"] == 2


@pytest.mark.slow
def test_bf16_and_fp16_autocast_train(tmp_path, data_root, run_zoo):
    pipeline = write_pipeline(tmp_path, data_root, max_iters=2, checkpoint_every=0, grad_clip=1.0)
    for amp in ("bf16", "fp16"):
        result = run_zoo("train", pipeline, "--out", tmp_path / amp, "--amp", amp)
        assert result.returncode == 0, result.stderr
        assert all(torch.isfinite(v.float()).all() for v in weights(tmp_path / amp).values())


# -- zoo average --------------------------------------------------------------------


def fake_model_dir(folder: Path, tensors: dict, model=None) -> Path:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    config = {
        "format": "zoo-model/1",
        "model": model or {"num_classes": 2},
        "zoo_version": "0",
        "plugins": {},
        "class_names": ["a", "b"],
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_average_is_the_mean_of_floats_and_keeps_the_last_counter(tmp_path):
    dirs = [
        fake_model_dir(
            tmp_path / f"c{i}",
            {
                "w": torch.tensor([1.0, 2.0]) * (i + 1),
                "n": torch.tensor(10 * i),
                "h": torch.tensor([1.0], dtype=torch.float16) * i,
            },
        )
        for i in range(3)
    ]
    average_model_dirs(dirs, tmp_path / "avg")
    out = load_file(str(tmp_path / "avg" / "model.safetensors"))
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0]))
    assert out["n"].item() == 20 and out["h"].dtype == torch.float16 and out["h"].item() == 1.0
    config = json.loads((tmp_path / "avg" / "config.json").read_text())
    assert config["class_names"] == ["a", "b"] and len(config["averaged_from"]) == 3


def test_average_refuses_mixed_architectures_and_bad_files(tmp_path, run_zoo):
    a = fake_model_dir(tmp_path / "a", {"w": torch.zeros(2)})
    b = fake_model_dir(tmp_path / "b", {"w": torch.zeros(3)})
    with pytest.raises(DataError, match=r"b/model.safetensors: tensor w has shape \(3,\)"):
        average_model_dirs([a, b], tmp_path / "out")
    c = fake_model_dir(tmp_path / "c", {"w": torch.zeros(2)}, model={"num_classes": 3})
    with pytest.raises(ConfigError, match="model config differs"):
        average_model_dirs([a, c], tmp_path / "out")
    d = fake_model_dir(tmp_path / "d", {"w": torch.zeros(2)})
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:20])
    result = run_zoo("average", a, d, "-o", tmp_path / "out")
    assert result.returncode != 0 and "d/model.safetensors" in result.stderr and "corrupt" in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()
    result = run_zoo("average", a, a, "-o", a)
    assert result.returncode == 2 and "one of the checkpoints" in result.stderr


def test_position_tables_get_no_weight_decay():
    from zoo_core.model_dir import build_segmentor

    swin = {
        "num_classes": 4,
        "backbone": {
            "type": "timm",
            "args": {
                "model_name": "swin_tiny_patch4_window7_224",
                "embed_dim": 16,
                "depths": [1, 1, 1, 1],
                "num_heads": [1, 1, 1, 1],
                "window_size": 4,
                "img_size": 64,
                "out_indices": [1, 2, 3],
            },
        },
        "heads": [{"type": "fcn", "args": {"channels": 8}}],
    }
    model = build_segmentor(swin)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, spec_of(max_iters=10))
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    tables = {n for n in names.values() if n.endswith("relative_position_bias_table")}
    assert len(tables) == 4 and tables <= no_decay
    assert not any(n.endswith("qkv.weight") for n in no_decay)


@pytest.mark.slow
def test_init_from_starts_from_a_trained_model(tmp_path, data_root, reference_run, run_zoo):
    pipeline = write_pipeline(tmp_path, data_root, max_iters=1, init_from=str(reference_run), lr=1e-12, warmup_iters=0)
    result = run_zoo("train", pipeline, "--out", tmp_path / "tuned")
    assert result.returncode == 0, result.stderr
    assert f"initialised from {reference_run}" in result.stderr
    # One step at a negligible learning rate: the convolution weights are still the reference's.
    tuned, reference = weights(tmp_path / "tuned"), weights(reference_run)
    name = "heads.1.conv_seg.weight"
    torch.testing.assert_close(tuned[name], reference[name], atol=1e-6, rtol=0)

    other = dict(TINY_MODEL, heads=TINY_MODEL["heads"][:1])
    path = tmp_path / "other.yaml"
    config = yaml.safe_load(pipeline.read_text())
    config["model"] = other
    path.write_text(yaml.safe_dump(config))
    result = run_zoo("train", path, "--out", tmp_path / "other")
    assert result.returncode != 0
    assert "unexpected key(s): heads.1." in result.stderr and "train.init_from" in result.stderr


def test_a_repeated_signal_aborts_a_single_process_but_not_a_torchrun_worker():
    from zoo_core.engine.interrupt import StopRequest

    with StopRequest(abort_on_repeat=False) as stop:  # torchrun passes the terminal's Ctrl-C on: it comes twice
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal == signal.SIGINT
    with pytest.raises(KeyboardInterrupt), StopRequest(abort_on_repeat=True) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored


@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_frame_is_one_line_also_from_a_loader_worker(tmp_path, run_zoo, workers):
    root = tmp_path / "synth"
    synthesize(root, videos=2, frames=3, size=(64, 96), seed=5)
    frame = sorted((root / "data").glob("*/origin/*.jpg"))[0]
    frame.write_bytes(frame.read_bytes()[:100])  # a download cut short
    path = write_pipeline(tmp_path, root, split="train", num_workers=workers, max_iters=2, warmup_iters=0)
    result = run_zoo("train", path, "--out", tmp_path / "run")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "DataLoader" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert frame.name in line and "cannot be decoded" in line, line


def test_worker_zoo_error_rebuilds_the_original_error():
    from zoo_core.engine.batches import worker_zoo_error
    from zoo_core.errors import ComponentError

    def relayed(text: str) -> str:  # the shape of torch's re-raised worker exception
        return (
            "Caught X in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            f'  File "x.py", line 1, in f\n    g()\n{text}\n'
        )

    error = worker_zoo_error(
        RuntimeError(
            relayed("zoo_core.errors.ComponentError: remapper 'r' (d 1.0) failed on a.png: ValueError: bad: table")
        )
    )
    assert isinstance(error, ComponentError) and error.exit_code == 2
    assert str(error) == "remapper 'r' (d 1.0) failed on a.png: ValueError: bad: table"
    error = worker_zoo_error(DataError(relayed("zoo_core.errors.DataError: frame f.jpg\nspans two lines")))
    assert type(error) is DataError and str(error) == "frame f.jpg\nspans two lines"
    assert worker_zoo_error(ValueError(relayed("ValueError: not ours"))) is None
    assert worker_zoo_error(DataError("a plain error")) is None
