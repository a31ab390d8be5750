"""Loading a model directory: stored dtypes must be the parameters' (or declared), and weights finite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zoo_core.errors import DataError
from zoo_core.model_dir import build_segmentor, load_model_dir, load_weights, save_model_dir

MODEL_CONFIG = {
    "num_classes": 3,
    "backbone": {"type": "timm", "args": {"model_name": "test_resnet", "out_indices": [1, 2]}},
    "heads": [{"type": "fcn", "args": {"channels": 8, "num_convs": 1}}],
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model")
    save_model_dir(build_segmentor(MODEL_CONFIG).eval(), MODEL_CONFIG, out, extra={"class_names": ["a", "b", "c"]})
    return out


@pytest.fixture
def model_dir(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "model"))


def conv_weight(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in sorted(tensors.items()) if v.is_floating_point() and v.dim() == 4)


def rewrite(model_dir: Path, change) -> str:
    """Apply ``change(tensors, name)`` to the stored tensors; returns the name of the conv weight it was given."""
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    name = conv_weight(tensors)
    change(tensors, name)
    save_file(tensors, path)
    return name


@pytest.mark.parametrize(
    "dtype, stored", [(torch.float16, "float16"), (torch.bfloat16, "bfloat16"), (torch.float64, "float64")]
)
def test_another_floating_dtype_is_refused_unless_declared(model_dir, dtype, stored):
    name = rewrite(model_dir, lambda t, n: t.update({n: t[n].to(dtype)}))
    with pytest.raises(DataError) as err:
        load_model_dir(model_dir)
    assert str(err.value) == (
        f"{model_dir / 'model.safetensors'}: tensor {name!r} is stored as {stored} but the model's parameter is "
        "float32 and config.json declares no dtype; convert the weights with `zoo convert ... --dtype` (which "
        "records the dtype in config.json), or save them in float32"
    )


@pytest.mark.parametrize("dtype, code", [(torch.bool, "BOOL"), (torch.int8, "I8"), (torch.uint8, "U8")])
def test_bool_or_integer_weights_are_refused_even_when_a_dtype_is_declared(model_dir, dtype, code):
    name = rewrite(model_dir, lambda t, n: t.update({n: t[n].to(dtype)}))
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(dict(config, dtype="fp16")))
    with pytest.raises(
        DataError,
        match=rf"tensor '{name}' is stored as {code}, not as floating-point numbers, but "
        r"the model's parameter is float32",
    ):
        load_model_dir(model_dir)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_with_the_tensor_name(model_dir, value):
    def poison(tensors, name):
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[3] = value

    name = rewrite(model_dir, poison)
    with pytest.raises(DataError, match=rf"model.safetensors: tensor '{name}' holds NaN or infinite values"):
        load_model_dir(model_dir)


def test_a_declared_dtype_is_cast_to_the_parameters(model_dir, saved):
    original = load_file(saved / "model.safetensors")
    rewrite(model_dir, lambda t, n: t.update({k: v.half() for k, v in t.items() if v.is_floating_point()}))
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(dict(config, dtype="fp16")))
    model, _ = load_model_dir(model_dir)
    for key, value in model.state_dict().items():
        expected = original[key].half().float() if original[key].is_floating_point() else original[key]
        assert value.dtype == original[key].dtype and torch.equal(value, expected), key

    name = rewrite(model_dir, lambda t, n: t.update({n: t[n].bfloat16()}))  # one tensor not in the declared dtype
    with pytest.raises(
        DataError,
        match=rf"tensor '{name}' is stored as bfloat16 but the model's parameter is float32 "
        "and config.json declares dtype fp16",
    ):
        load_model_dir(model_dir)

    (model_dir / "config.json").write_text(json.dumps(dict(config, dtype="fp8")))
    with pytest.raises(DataError, match=r"config.json: dtype 'fp8' is not one of fp32, fp16, bf16"):
        load_model_dir(model_dir)


@pytest.mark.parametrize("declared", [[], {}, 16, True])
def test_a_dtype_that_is_not_a_name_is_refused(model_dir, declared):
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(dict(config, dtype=declared)))
    with pytest.raises(DataError) as err:
        load_model_dir(model_dir)
    assert str(err.value) == (
        f"{model_dir / 'config.json'}: dtype {declared!r} is not one of fp32, fp16, bf16; "
        "convert the weights again with zoo convert --dtype"
    )


def test_config_json_is_read_once_and_load_weights_takes_it_parsed(model_dir, saved, monkeypatch):
    rewrite(model_dir, lambda t, n: t.update({k: v.half() for k, v in t.items() if v.is_floating_point()}))
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(dict(config, dtype="fp16")))
    reads = []
    original = Path.read_text

    def counting(self, *args, **kwargs):
        reads.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    load_model_dir(model_dir)
    assert reads.count("config.json") == 1
    monkeypatch.undo()

    # What load_weights is given, not the file beside the weights, declares the dtype.
    model = build_segmentor(MODEL_CONFIG)
    with pytest.raises(DataError, match="config.json declares dtype bf16"):
        load_weights(model, model_dir / "model.safetensors", "the model", config={"dtype": "bf16"})
    load_weights(model, model_dir / "model.safetensors", "the model", config={"dtype": "fp16"})
    load_weights(model, model_dir / "model.safetensors", "the model")  # without it: the file beside the weights


def test_an_fp32_directory_loads_exactly(model_dir, saved):
    model, _ = load_model_dir(model_dir)
    stored = load_file(saved / "model.safetensors")
    assert all(torch.equal(value, stored[key]) for key, value in model.state_dict().items())
