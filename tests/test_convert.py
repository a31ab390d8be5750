"""``zoo convert``: third-party checkpoints into model directories, read with ``weights_only=True`` only."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import save_file

from zoo_core.model_dir import build_segmentor
from zoo_core.errors import ConfigError, DataError
from zoo_core.hub.command import convert_command
from zoo_core.hub.convert import convert_checkpoint, parse_renames
from zoo_core.model_dir import load_model_dir, save_model_dir

MODEL_CONFIG = {"num_classes": 3,
                "backbone": {"type": "timm", "args": {"model_name": "test_resnet", "out_indices": [1, 2]}},
                "heads": [{"type": "fcn", "args": {"channels": 8, "num_convs": 1}}]}


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
    torch.save({"meta": {"epoch": 7, "lr": [0.1]}, "optimizer": {"step": torch.tensor(5)},
                "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, checkpoint)
    result = CliRunner().invoke(convert_command, [str(checkpoint), "--config", str(model_yaml), "-o",
                                                  str(tmp_path / "out"), "--strip-prefix", "module."])
    assert result.exit_code == 0, result.output
    assert f"converted {len(source.state_dict())} tensors from {checkpoint} (key 'state_dict')" in result.output
    model, config = load_model_dir(tmp_path / "out")
    assert config["model"] == MODEL_CONFIG and config["converted_from"] == "ddp.pth"
    assert same_predictions(model, source)


def test_safetensors_input_with_renamed_keys_and_config_json(source, tmp_path):
    reference = tmp_path / "reference"
    save_model_dir(source, MODEL_CONFIG, reference, extra={"class_names": ["a", "b", "c"]})
    renamed = {k.replace("backbone.model.", "encoder.").replace("heads.0.", "decode_head."): v
               for k, v in source.state_dict().items()}
    save_file({k: v.contiguous() for k, v in renamed.items()}, tmp_path / "weights.safetensors")
    report = convert_checkpoint(tmp_path / "weights.safetensors", reference / "config.json", tmp_path / "out",
                                renames=parse_renames(["encoder.=backbone.model.", "decode_head.=heads.0."]))
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
    assert message.startswith(f"{checkpoint} needs full unpickling to load (it contains "
                              f"{__name__}.TrainingState), which can run arbitrary code")
    assert "torch.load(weights_only=True)" in message
    assert not (tmp_path / "out").exists()


def test_existing_model_directory_is_not_overwritten(source, model_yaml, tmp_path):
    save_model_dir(source, MODEL_CONFIG, tmp_path / "out")
    before = json.loads((tmp_path / "out" / "config.json").read_text())
    torch.save(source.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(ConfigError, match="already holds a model"):
        convert_checkpoint(tmp_path / "plain.pth", model_yaml, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == before
