"""Which distribution and version provided each component, and which weights a run used.

`pipeline.json`, `metrics.json` and a model's `config.json` record the provenance; `zoo list
PATTERN` shows every component of the plugin or distribution PATTERN names; a rerun into a
run directory resumes only with the same weights (their sha256), and warns when a version changed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

import yaml
from test_plugins import Site
from test_run_errors import CLASS_NAMES, EXPLODING_MODEL, FAULTY, faulty, pipeline_file, save_model  # noqa: F401 (faulty: a fixture)

from zoo_core.model_dir import ModelSpec, build_segmentor, save_model_dir
from zoo_core.plugins import reset_registry
from zoo_core.testing import TINY_MODEL

CORE_VERSION = metadata.version("zoo-core")


def component(kind: str, name: str, where: str, distribution: str = "zoo-core", version: str = CORE_VERSION) -> dict:
    return {"kind": kind, "name": name, "distribution": distribution, "version": version, "where": where}


# -- provenance ----------------------------------------------------------------------------------


def test_run_records_every_component_in_pipeline_json_and_metrics_json(faulty, synthetic_vspw, zoo_cli, tmp_path):
    quiet = dict(EXPLODING_MODEL, heads=[{"type": "exploding", "args": {}}])
    tiny, plugged = save_model(tmp_path / "tiny", TINY_MODEL, 0), save_model(tmp_path / "plugged", quiet, 0)
    pipeline = {
        "data": {"root": str(synthetic_vspw.root), "split": "val", "max_videos": 1},
        "models": [
            {"name": "a", "weights": str(tiny), "tta": {"type": "fail-tta"}},
            {"name": "b", "weights": str(plugged)},
        ],
        "ensemble": {"type": "fail-at"},
        "runtime": {"amp": "none", "progress": False},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    out = tmp_path / "out"
    result = zoo_cli("run", path, "--out", out)
    assert result.exit_code == 0, result.output

    expected = {
        "zoo-core": CORE_VERSION,
        "components": [
            component("backbone", "timm", "models[0].backbone"),
            component("head", "fcn", "models[0].heads[0]"),
            component("head", "ocr", "models[0].heads[1]"),
            component("tta", "fail-tta", "models[0].tta", *FAULTY),
            component("backbone", "timm", "models[1].backbone"),
            component("head", "exploding", "models[1].heads[0]", *FAULTY),
            component("tta", "identity", "models[1].tta"),
            component("ensembler", "fail-at", "ensemble", *FAULTY),
        ],
    }
    assert json.loads((out / "pipeline.json").read_text())["provenance"] == expected
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"] == expected and 0 <= metrics["miou"] <= 1


def test_model_config_records_its_components(faulty, tmp_path):
    quiet = dict(EXPLODING_MODEL, heads=[{"type": "exploding", "args": {}}])
    config = json.loads((save_model(tmp_path / "model", quiet, 0) / "config.json").read_text())
    assert config["provenance"] == {
        "zoo-core": CORE_VERSION,
        "components": [
            component("backbone", "timm", "model.backbone"),
            component("head", "exploding", "model.heads[0]", *FAULTY),
        ],
    }
    assert config["plugins"] == {"zoo-core": CORE_VERSION, "zoo-faulty": "0.3.1"}
    assert config["class_names"] == CLASS_NAMES


def test_zoo_train_records_the_provenance_in_config_json(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["provenance"] == {
        "zoo-core": CORE_VERSION,
        "components": [
            component("backbone", "timm", "model.backbone"),
            component("head", "fcn", "model.heads[0]"),
            component("head", "ocr", "model.heads[1]"),
            component("loss", "ce", "train.loss"),  # the training loss shaped the weights too
        ],
    }
    assert config["zoo_version"] == CORE_VERSION
    assert config["plugins"] == {"zoo-core": CORE_VERSION}  # what rebuilding the model needs


def test_a_model_spec_saves_like_its_mapping(tmp_path):
    spec = ModelSpec.parse(TINY_MODEL)
    save_model_dir(build_segmentor(spec), spec, tmp_path / "spec", components=[("train.loss", "loss", "ohem-ce")])
    config = json.loads((tmp_path / "spec" / "config.json").read_text())
    assert ModelSpec.parse(config["model"]) == spec
    assert config["provenance"]["components"][-1] == component("loss", "ohem-ce", "train.loss")


# -- zoo list PATTERN ----------------------------------------------------------------------------


def test_zoo_list_a_distribution_or_plugin_shows_all_its_components(faulty, zoo_cli):
    def listing(*args: str) -> dict:
        result = zoo_cli("list", "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    faulty_parts = [("ensembler", "fail-at"), ("head", "exploding"), ("loss", "fail-loss"), ("tta", "fail-tta")]
    for pattern in ("zoo-faulty", "zoo_faulty", "faulty", "zoo-fault*"):
        found = listing(pattern)
        assert sorted((c["kind"], c["name"]) for c in found["components"]) == faulty_parts, pattern
        assert [(p["name"], p["distribution"], p["version"]) for p in found["plugins"]] == [("faulty", *FAULTY)]
    assert [c["name"] for c in listing("--kind", "tta", "zoo-faulty")["components"]] == ["fail-tta"]

    core = listing("zoo-core")
    names = {(c["kind"], c["name"]) for c in core["components"]}
    assert {
        ("backbone", "timm"),
        ("head", "fcn"),
        ("head", "ocr"),
        ("tta", "flip"),
        ("ensembler", "weighted"),
        ("loss", "ce"),
    } <= names
    assert {c["distribution"] for c in core["components"]} == {"zoo-core"}
    assert [p["name"] for p in core["plugins"]] == ["builtin"]
    assert {c["name"] for c in listing("builtin")["components"]} == {name for _, name in names}
    # a component's own name still selects that component alone
    assert [c["name"] for c in listing("fail-*")["components"]] == ["fail-at", "fail-loss", "fail-tta"]

    text = zoo_cli("list", "zoo-faulty").stdout
    assert all(name in text for _, name in faulty_parts) and "fcn" not in text


# -- resume integrity: the weights a run used ----------------------------------------------------------


def test_changed_weights_refuse_to_resume_and_the_same_weights_resume(
    faulty, synthetic_vspw, zoo_cli, tmp_path, monkeypatch
):
    import zoo_core.pipeline.run as run

    weights = save_model(tmp_path / "model", TINY_MODEL, 0)
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("tiny", weights)])
    out = tmp_path / "out"
    assert zoo_cli("run", path, "--out", out).exit_code == 0
    recorded = json.loads((out / "pipeline.json").read_text())["models"]["tiny"]["files"]
    assert set(recorded) == {"config.json", "model.safetensors"}
    assert (
        recorded["model.safetensors"]["sha256"]
        == hashlib.sha256((weights / "model.safetensors").read_bytes()).hexdigest()
    )

    hashed = []
    monkeypatch.setattr(run, "file_sha256", lambda p, real=run.file_sha256: hashed.append(Path(p).name) or real(p))
    again = zoo_cli("run", path, "--out", out)
    assert again.exit_code == 0 and "2 finished video(s) skipped" in again.stderr
    assert hashed == [], "unchanged files (same size and time) are not hashed again"

    save_model(weights, TINY_MODEL, 1)  # other weights, same size, same config.json
    refused = zoo_cli("run", path, "--out", out)
    assert refused.exit_code == 2
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert "holds 2 finished video(s) of the same pipeline with other weights" in line
    assert f"model 'tiny': {weights.resolve()}/model.safetensors has changed" in line
    assert "config.json" not in line
    assert line.endswith(f"choose another --out, or delete {out} to start over")
    assert hashed == ["config.json", "model.safetensors"], "a file with a new time is hashed again"

    hashed.clear()
    save_model(weights, TINY_MODEL, 0)  # the original bytes again, written anew
    resumed = zoo_cli("run", path, "--out", out)
    assert resumed.exit_code == 0 and "2 finished video(s) skipped" in resumed.stderr
    assert hashed == ["config.json", "model.safetensors"]


def test_a_changed_config_json_refuses_to_resume(faulty, synthetic_vspw, zoo_cli, tmp_path):
    weights = save_model(tmp_path / "model", TINY_MODEL, 0)
    pipeline = yaml.safe_load(pipeline_file(tmp_path, synthetic_vspw.root, [("tiny", weights)]).read_text())
    pipeline["data"]["max_videos"] = 1
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    out = tmp_path / "out"
    assert zoo_cli("run", path, "--out", out).exit_code == 0

    config = json.loads((weights / "config.json").read_text())
    config["class_names"][:2] = config["class_names"][1::-1]  # two classes swapped: other predictions
    (weights / "config.json").write_text(json.dumps(config))
    refused = zoo_cli("run", path, "--out", out)
    assert refused.exit_code == 2
    assert f"model 'tiny': {weights.resolve()}/config.json has changed" in refused.stderr


def test_a_changed_plugin_version_warns_and_resumes(tmp_path, synthetic_vspw, zoo_cli, monkeypatch):
    site = Site(tmp_path / "site")
    site.root.mkdir()
    site.add(
        "zoo-drifting",
        "1.0",
        "zoo_drifting",
        "from zoo_core import hookimpl\n\n@hookimpl\n"
        "def zoo_tta_policies():\n    return {'drift': lambda: (lambda predict, images: predict(images))}\n",
    )
    monkeypatch.syspath_prepend(str(site.root))
    weights = save_model(tmp_path / "model", TINY_MODEL, 0)
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("tiny", weights)], tta={"type": "drift"})
    out = tmp_path / "out"
    try:
        assert zoo_cli("run", path, "--out", out).exit_code == 0
        metadata_file = site.root / "zoo_drifting-1.0.dist-info" / "METADATA"
        metadata_file.write_text(metadata_file.read_text().replace("Version: 1.0", "Version: 1.1"))
        result = zoo_cli("run", path, "--out", out)
    finally:
        for module in [m for m in sys.modules if m.split(".")[0] == "zoo_drifting"]:
            del sys.modules[module]
        reset_registry()
    assert result.exit_code == 0 and "2 finished video(s) skipped" in result.stderr
    assert (
        "warning: " + str(out) + " was started with other versions (tta 'drift' at models[0].tta: "
        "zoo-drifting 1.0 then, zoo-drifting 1.1 now)"
    ) in result.stderr
    assert json.loads((out / "pipeline.json").read_text())["provenance"]["components"][3]["version"] == "1.0"
    assert json.loads((out / "metrics.json").read_text())["provenance"]["components"][3]["version"] == "1.1"


def test_auto_precision_that_resolves_otherwise_refuses_to_resume(synthetic_vspw, zoo_cli, tmp_path, monkeypatch):
    import zoo_core.runtime as runtime

    weights = save_model(tmp_path / "model", TINY_MODEL, 0)
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("tiny", weights)])
    path.write_text(path.read_text().replace("amp: none", "amp: auto"))
    out = tmp_path / "out"
    monkeypatch.setattr(runtime, "bf16_support", lambda device: runtime.Bf16Support(False, "CPU (AVX2)"))
    first = zoo_cli("run", path, "--out", out)
    assert first.exit_code == 0 and "precision: fp32 (runtime.amp auto: this CPU (AVX2) has no native bf16)" in (
        first.stderr
    )
    assert json.loads((out / "pipeline.json").read_text())["precision"] == "none"
    assert json.loads((out / "metrics.json").read_text())["precision"] == "none"

    # The same pipeline on a machine where `auto` means bf16 must not add bf16 videos to fp32 ones.
    monkeypatch.setattr(runtime, "bf16_support", lambda device: runtime.Bf16Support(True, "CPU (AVX512 with AMX)"))
    refused = zoo_cli("run", path, "--out", out)
    assert refused.exit_code == 2
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert "the same pipeline in another precision (none then, bf16 now" in line
