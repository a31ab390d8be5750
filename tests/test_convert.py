"""``zoo convert``: third-party checkpoints into model directories, read with ``weights_only=True`` only."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import save_file

from zoo_core.errors import ConfigError, DataError
from zoo_core.hub.command import convert_command
from zoo_core.hub.convert import convert_checkpoint, parse_renames
from zoo_core.model_dir import build_segmentor, load_model_dir, save_model_dir

MODEL_CONFIG = {
    "num_classes": 3,
    "backbone": {"type": "timm", "args": {"model_name": "test_resnet", "out_indices": [1, 2]}},
    "heads": [{"type": "fcn", "args": {"channels": 8, "num_convs": 1}}],
}


class TrainingState:
    """Stands for any object a training script pickles beside its weights."""

    def __init__(self):
        self.epoch = 7


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(3)
    model = build_segmentor(MODEL_CONFIG)
    model.train()
    model(torch.randn(2, 3, 64, 96))  # BN statistics away from their defaults
    return model.eval()


@pytest.fixture
def model_yaml(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"model": MODEL_CONFIG}))  # a pipeline-style `model:` section
    return path


def same_predictions(a, b) -> bool:
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        return torch.equal(a.predict(images), b.predict(images))


def test_data_parallel_checkpoint_under_state_dict_converts_and_loads(source, model_yaml, tmp_path):
    checkpoint = tmp_path / "ddp.pth"
    torch.save(
        {
            "meta": {"epoch": 7, "lr": [0.1]},
            "optimizer": {"step": torch.tensor(5)},
            "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
        },
        checkpoint,
    )
    result = CliRunner().invoke(
        convert_command,
        [str(checkpoint), "--config", str(model_yaml), "-o", str(tmp_path / "out"), "--strip-prefix", "module."],
    )
    assert result.exit_code == 0, result.output
    assert f"converted {len(source.state_dict())} tensors from {checkpoint} (key 'state_dict')" in result.output
    model, config = load_model_dir(tmp_path / "out")
    assert config["model"] == MODEL_CONFIG and config["converted_from"] == "ddp.pth"
    assert same_predictions(model, source)


def test_safetensors_input_with_renamed_keys_and_config_json(source, tmp_path):
    reference = tmp_path / "reference"
    save_model_dir(source, MODEL_CONFIG, reference, extra={"class_names": ["a", "b", "c"]})
    renamed = {
        k.replace("backbone.model.", "encoder.").replace("heads.0.", "decode_head."): v
        for k, v in source.state_dict().items()
    }
    save_file({k: v.contiguous() for k, v in renamed.items()}, tmp_path / "weights.safetensors")
    report = convert_checkpoint(
        tmp_path / "weights.safetensors",
        reference / "config.json",
        tmp_path / "out",
        renames=parse_renames(["encoder.=backbone.model.", "decode_head.=heads.0."]),
    )
    assert (report.key, report.tensors) == (None, len(renamed))
    model, config = load_model_dir(tmp_path / "out")
    assert config["class_names"] == ["a", "b", "c"]
    assert same_predictions(model, source)


def test_key_mismatch_is_reported_and_nothing_is_written(source, model_yaml, tmp_path):
    checkpoint = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, checkpoint)
    with pytest.raises(DataError) as err:
        convert_checkpoint(checkpoint, model_yaml, tmp_path / "out")
    message = str(err.value)
    names = list(source.state_dict())
    # BatchNorm does not report a missing num_batches_tracked (old checkpoints lack it)
    missing = sum(not name.endswith("num_batches_tracked") for name in names)
    assert f"{missing} missing key(s): backbone.model." in message
    assert f"{len(names)} unexpected key(s): module." in message
    assert "adapt them with --strip-prefix and --map OLD=NEW" in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="has no key 'weights'; its top level has: model"):
        convert_checkpoint(checkpoint, model_yaml, tmp_path / "out", key="weights")
    with pytest.raises(ConfigError, match="--map 'encoder': expected OLD=NEW"):
        parse_renames(["encoder"])


def test_checkpoint_that_needs_arbitrary_classes_is_refused(source, model_yaml, tmp_path):
    checkpoint = tmp_path / "full.pth"
    torch.save({"state_dict": source.state_dict(), "trainer": TrainingState()}, checkpoint)
    with pytest.raises(DataError) as err:
        convert_checkpoint(checkpoint, model_yaml, tmp_path / "out")
    message = str(err.value)
    assert message.startswith(
        f"{checkpoint} needs full unpickling to load (it contains "
        f"{__name__}.TrainingState), which can run arbitrary code"
    )
    assert "torch.load(weights_only=True)" in message
    assert not (tmp_path / "out").exists()


def test_existing_model_directory_is_not_overwritten(source, model_yaml, tmp_path):
    save_model_dir(source, MODEL_CONFIG, tmp_path / "out")
    before = json.loads((tmp_path / "out" / "config.json").read_text())
    torch.save(source.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(ConfigError, match="already holds a model"):
        convert_checkpoint(tmp_path / "plain.pth", model_yaml, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == before


# --- inputs that are not checkpoints, and weights that are not floating-point numbers ----------------


def test_files_that_are_not_checkpoints_are_named_without_a_traceback(run_zoo, model_yaml, tmp_path):
    import random

    noise = random.Random(0).randbytes(4096)
    (tmp_path / "notes.txt").write_text("hello\nthese are notes, not weights\n")
    (tmp_path / "noise.pth").write_bytes(b"\x13" + noise)
    (tmp_path / "pickle-noise.pth").write_bytes(b"\x80" + noise)  # starts like a pickle, then garbage
    torch.save({1: torch.zeros(2)}, tmp_path / "int-keys.pth")
    torch.save({"state_dict": {"a": torch.zeros(1), 2: torch.zeros(1)}}, tmp_path / "mixed-keys.pth")
    cases = {
        "notes.txt": "is not a PyTorch checkpoint (neither the zip archive nor the pickle that torch.save writes)",
        "noise.pth": "is not a PyTorch checkpoint",
        "pickle-noise.pth": "is not a readable PyTorch checkpoint",
        "int-keys.pth": "the top level has keys that are not weight names (1)",
        "mixed-keys.pth": "key 'state_dict' has keys that are not weight names (2)",
    }
    for name, problem in cases.items():
        result = run_zoo("convert", tmp_path / name, "--config", model_yaml, "-o", tmp_path / f"out-{name}")
        assert result.returncode == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr and problem in result.stderr, (name, result.stderr)
        assert result.stderr.startswith(f"error: {tmp_path / name}") and result.stderr.count("\n") == 1
        assert not (tmp_path / f"out-{name}").exists()
        assert "needs full unpickling" not in result.stderr


def test_a_damaged_zip_checkpoint_is_not_readable_rather_than_unsafe(source, model_yaml, tmp_path):
    checkpoint = tmp_path / "cut.pth"
    torch.save(source.state_dict(), checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:2000])  # a zip whose central directory is gone
    with pytest.raises(DataError, match=f"{checkpoint} is not .*PyTorch checkpoint"):
        convert_checkpoint(checkpoint, model_yaml, tmp_path / "out")


def test_integer_or_non_finite_weights_are_refused(source, model_yaml, tmp_path):
    state = dict(source.state_dict())
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    torch.save(dict(state, **{name: state[name].to(torch.int8)}), tmp_path / "int8.pth")
    with pytest.raises(DataError, match=f"weight '{name}' is int8, but the model's parameter is float32"):
        convert_checkpoint(tmp_path / "int8.pth", model_yaml, tmp_path / "out")
    broken = state[name].clone()
    broken[0, 0, 0, 0] = float("nan")
    torch.save(dict(state, **{name: broken}), tmp_path / "nan.pth")
    with pytest.raises(DataError, match=f"weight '{name}' holds NaN or infinite values"):
        convert_checkpoint(tmp_path / "nan.pth", model_yaml, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dtype_stores_half_precision_and_loading_casts_it_back(source, model_yaml, tmp_path):
    from safetensors import safe_open

    torch.save(source.state_dict(), tmp_path / "plain.pth")
    result = CliRunner().invoke(
        convert_command,
        [str(tmp_path / "plain.pth"), "--config", str(model_yaml), "-o", str(tmp_path / "half"), "--dtype", "fp16"],
    )
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("stored as fp16")
    with safe_open(str(tmp_path / "half" / "model.safetensors"), "pt") as stored:
        dtypes = {stored.get_slice(k).get_dtype() for k in stored.keys()}
    assert dtypes == {"F16", "I64"}  # floats halved; BatchNorm's counters stay integers
    model, config = load_model_dir(tmp_path / "half")
    assert config["dtype"] == "fp16"
    for key, value in model.state_dict().items():  # fp32 parameters holding the fp16 values
        expected = source.state_dict()[key]
        if expected.is_floating_point():
            assert value.dtype == torch.float32 and torch.equal(value, expected.half().float()), key
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(torch.softmax(model(images)[-1], 1), torch.softmax(source(images)[-1], 1), atol=2e-2)

    # a config.json given as --config does not pass its dtype on: this model is stored as fp32
    convert_checkpoint(tmp_path / "plain.pth", tmp_path / "half" / "config.json", tmp_path / "full")
    assert "dtype" not in json.loads((tmp_path / "full" / "config.json").read_text())
    with pytest.raises(SystemExit):
        convert_command.main(
            [str(tmp_path / "plain.pth"), "--config", str(model_yaml), "-o", str(tmp_path / "x"), "--dtype", "fp8"],
            standalone_mode=True,
        )
