"""A component's failure in `zoo run` and `zoo train`: one line naming it, `bind` before any model loads,
a reusable `--out`.

The failing components come from a real third-party distribution (``zoo-faulty`` 0.3.1, a
package plus its ``dist-info`` on ``sys.path``), discovered through its entry point as an
installed plugin would be.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_plugins import Site

from zoo_core.data.vspw import VSPWDataset
from zoo_core.errors import ComponentError
from zoo_core.model_dir import build_segmentor, save_model_dir
from zoo_core.plugins import reset_registry
from zoo_core.testing import TINY_MODEL

FAULTY = ("zoo-faulty", "0.3.1")

FAULTY_PLUGIN = '''
import json
from pathlib import Path

import torch.nn.functional as F
from torch import nn

from zoo_core import hookimpl
from zoo_core.errors import ConfigError


def record(path, context):
    if path:
        Path(path).write_text(json.dumps({
            "model_names": list(context.model_names), "class_names": list(context.class_names),
            "num_classes": context.num_classes, "device": str(context.device), "kind": context.kind,
            "where": context.where}))


class FailAt:
    """Mean of the models' probabilities; raises ValueError on call number ``at`` (0-based)."""

    def __init__(self, at=None, prefer=None, record=None):
        self.at, self.prefer, self.record, self.calls = at, prefer, record, 0

    def bind(self, context):
        record(self.record, context)
        if self.prefer is not None and self.prefer not in context.model_names:
            raise ConfigError(f"prefer: no model is named {self.prefer!r}; the pipeline's models are "
                              f"{', '.join(context.model_names)}")

    def __call__(self, per_model):
        if self.calls == self.at:
            raise ValueError(f"call {self.calls} is over the budget")
        self.calls += 1
        return sum(per_model.values()) / len(per_model)


class FailAtTTA:
    """No augmentation; raises ValueError on call number ``at`` (0-based)."""

    def __init__(self, at=None, record=None):
        self.at, self.record, self.calls = at, record, 0

    def bind(self, context):
        record(self.record, context)

    def __call__(self, predict, images):
        if self.calls == self.at:
            raise ValueError("the policy gave up")
        self.calls += 1
        return predict(images)


class ExplodingHead(nn.Module):
    """A 1x1 classifier on the last feature map that raises RuntimeError on forward number ``at``."""

    def __init__(self, in_channels, in_strides, num_classes, at=None, loss_weight=1.0):
        super().__init__()
        self.num_classes, self.loss_weight, self.at, self.calls = num_classes, loss_weight, at, 0
        self.classifier = nn.Conv2d(in_channels[-1], num_classes, 1)

    def forward(self, features, prev_output=None):
        if self.calls == self.at:
            raise RuntimeError("the head exploded")
        self.calls += 1
        return self.classifier(features[-1])


class FailLoss:
    """Cross-entropy at the target's size; raises ValueError on call number ``at``; ``classes`` must exist."""

    def __init__(self, at=None, classes=()):
        self.at, self.classes, self.calls = at, list(classes), 0

    def bind(self, context):
        unknown = [name for name in self.classes if name not in context.class_names]
        if unknown:
            raise ConfigError(f"classes: {', '.join(unknown)} not among the {context.num_classes} classes")

    def __call__(self, output, target, context):
        if self.calls == self.at:
            raise ValueError("the loss is not defined here")
        self.calls += 1
        logits = F.interpolate(output, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, target, ignore_index=255)


@hookimpl
def zoo_losses():
    return {"fail-loss": FailLoss}


@hookimpl
def zoo_ensemblers():
    return {"fail-at": FailAt}


@hookimpl
def zoo_tta_policies():
    return {"fail-tta": FailAtTTA}


@hookimpl
def zoo_heads():
    return {"exploding": ExplodingHead}
'''

EXPLODING_MODEL = {
    "num_classes": 124,
    "backbone": TINY_MODEL["backbone"],
    "heads": [{"type": "exploding", "args": {"at": 3}}],
}
CLASS_NAMES = [f"class-{i}" for i in range(124)]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """The ``zoo-faulty`` distribution, importable in this process and (through ``site.env``) in a child."""
    site = Site(tmp_path_factory.mktemp("site"))
    site.add(*FAULTY, "zoo_faulty", FAULTY_PLUGIN, entry_point="faulty")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site.root))
        reset_registry()
        yield site
    for module in [m for m in sys.modules if m.split(".")[0] == "zoo_faulty"]:
        del sys.modules[module]
    reset_registry()


def save_model(folder: Path, config: dict, seed: int) -> Path:
    """A model directory of ``config``, initialised from ``seed`` (nothing here depends on training)."""
    torch.manual_seed(seed)
    save_model_dir(build_segmentor(config), config, folder, extra={"class_names": CLASS_NAMES})
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory, faulty) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "tiny": save_model(folder / "tiny", TINY_MODEL, 0),
        "exploding": save_model(folder / "exploding", EXPLODING_MODEL, 0),
    }


def pipeline_file(folder: Path, data_root: Path, models: list[tuple[str, Path]], tta=None, ensemble=None) -> Path:
    pipeline = {
        "data": {"root": str(data_root), "split": "val"},
        "models": [
            {"name": name, "weights": str(weights), "tta": tta or {"type": "identity"}} for name, weights in models
        ],
        "runtime": {"amp": "none", "progress": False},
    }
    if ensemble:
        pipeline["ensemble"] = ensemble
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def frame_at(root: Path, index: int) -> tuple[str, str]:
    """(video, frame name) of the ``index``-th frame `zoo run` predicts on the val split."""
    dataset = VSPWDataset(root, "val")
    refs = [ref for video in dataset.videos for ref in dataset.frames(video)]
    return refs[index].video, refs[index].name


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# -- a failure while the pipeline runs -------------------------------------------------------------


def test_ensembler_failure_is_one_line_and_the_fixed_pipeline_reuses_out(
    faulty, models, synthetic_vspw, run_zoo, zoo_cli, tmp_path
):
    root = synthetic_vspw.root
    two = [("a", models["tiny"]), ("b", models["tiny"])]
    path = pipeline_file(tmp_path, root, two, ensemble={"type": "fail-at", "args": {"at": 2}})
    out = tmp_path / "out"

    result = run_zoo("run", path, "--out", out, env=faulty.env)
    video, frame = frame_at(root, 2)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [
        f"error: ensembler 'fail-at' (zoo-faulty 0.3.1) failed on video {video} frame {frame}: "
        "ValueError: call 2 is over the budget"
    ]
    assert "Traceback" not in result.stderr
    assert sorted(p.stem for p in (out / "pred" / video).glob("*.png")) == [frame_at(root, i)[1] for i in (0, 1)]

    debug = run_zoo("run", path, "--out", tmp_path / "debug", env={**faulty.env, "ZOO_DEBUG": "1"})
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "ValueError: call 2 is over the budget" in debug.stderr
    assert "zoo_faulty/plugin.py" in debug.stderr  # the plugin's own line, for its author

    # The corrected pipeline is another pipeline, but nothing had finished: the directory is its.
    fixed = pipeline_file(tmp_path, root, two, ensemble={"type": "fail-at", "args": {"at": None}})
    result = zoo_cli("run", fixed, "--out", out)
    assert result.exit_code == 0, result.output
    assert "starting over" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["components"][-1] == {
        "kind": "ensembler",
        "name": "fail-at",
        "distribution": "zoo-faulty",
        "version": "0.3.1",
        "where": "ensemble",
    }
    for name in synthetic_vspw.splits["val"]:
        assert len(list((out / "pred" / name).glob("*.png"))) == synthetic_vspw.frames


def test_a_finished_video_keeps_out_from_another_pipeline(faulty, models, synthetic_vspw, zoo_cli, tmp_path):
    root = synthetic_vspw.root
    two = [("a", models["tiny"]), ("b", models["tiny"])]
    second_video_frame = synthetic_vspw.frames + 1  # the first video finishes, the second fails
    failing = pipeline_file(tmp_path, root, two, ensemble={"type": "fail-at", "args": {"at": second_video_frame}})
    out = tmp_path / "out"
    result = zoo_cli("run", failing, "--out", out)
    video, frame = frame_at(root, second_video_frame)
    assert result.exit_code == 2
    assert f"failed on video {video} frame {frame}: ValueError" in result.stderr
    assert len(list((out / "state").glob("*.npz"))) == 1

    fixed = pipeline_file(tmp_path, root, two, ensemble={"type": "fail-at", "args": {"at": None}})
    refused = zoo_cli("run", fixed, "--out", out)
    assert refused.exit_code == 2
    assert "holds 1 finished video(s) of a different pipeline" in refused.stderr
    assert f"delete {out} to start over" in refused.stderr
    assert len(list((out / "state").glob("*.npz"))) == 1, "nothing of the earlier run is removed"


def test_tta_failure_names_the_policy_the_model_and_the_frame(faulty, models, synthetic_vspw, zoo_cli, tmp_path):
    path = pipeline_file(
        tmp_path, synthetic_vspw.root, [("solo", models["tiny"])], tta={"type": "fail-tta", "args": {"at": 5}}
    )
    result = zoo_cli("run", path, "--out", tmp_path / "out")
    video, frame = frame_at(synthetic_vspw.root, 5)
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        f"error: tta 'fail-tta' (zoo-faulty 0.3.1) of model 'solo' failed on video {video} frame {frame}: "
        "ValueError: the policy gave up"
    ]


def test_model_failure_names_its_backbone_and_heads_with_their_distributions(
    faulty, models, synthetic_vspw, zoo_cli, tmp_path
):
    path = pipeline_file(
        tmp_path, synthetic_vspw.root, [("boom", models["exploding"])], tta={"type": "flip"}
    )  # two forwards per frame: forward 3 is frame 1, mirrored
    result = zoo_cli("run", path, "--out", tmp_path / "out")
    video, frame = frame_at(synthetic_vspw.root, 1)
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        "error: model 'boom' (backbone 'timm' from zoo-core 0.1.0, head 'exploding' from zoo-faulty 0.3.1) "
        f"failed on video {video} frame {frame}: RuntimeError: the head exploded"
    ]


def test_component_error_keeps_the_original_exception_as_its_cause(faulty, models, synthetic_vspw, tmp_path):
    from zoo_core.pipeline.run import run_pipeline
    from zoo_core.pipeline.schema import load_pipeline

    path = pipeline_file(
        tmp_path, synthetic_vspw.root, [("solo", models["tiny"])], tta={"type": "fail-tta", "args": {"at": 0}}
    )
    with pytest.raises(ComponentError) as info:
        run_pipeline(load_pipeline(path), tmp_path / "out", log=lambda message: None)
    assert info.value.exit_code == 2
    assert isinstance(info.value.__cause__, ValueError) and str(info.value.__cause__) == "the policy gave up"


# -- bind: before any model loads ------------------------------------------------------------------


@pytest.fixture
def unloadable(models, tmp_path) -> Path:
    """A model directory whose config.json is sound but whose weights cannot load: reaching them fails."""
    folder = tmp_path / "unloadable"
    folder.mkdir()
    (folder / "config.json").write_bytes((models["tiny"] / "config.json").read_bytes())
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    return folder


@pytest.mark.parametrize(
    "ensemble, message",
    [
        (
            {"type": "weighted", "args": {"weights": {"tinyy": 1.0}}},
            "error: ensembler 'weighted' (zoo-core 0.1.0) failed checking ensemble.args: weighted ensembler: unknown "
            "model name(s) tinyy; no weight for tiny; the pipeline's models are: tiny",
        ),
        (
            {"type": "weighted", "args": {"gamma": 0.56}},
            "error: ensembler 'weighted' (zoo-core 0.1.0) failed checking ensemble.args: weighted ensembler: "
            "gamma needs exactly two models, the pipeline has 1 (tiny); use weights for more",
        ),
        (
            {"type": "fail-at", "args": {"prefer": "tinyy"}},
            "error: ensembler 'fail-at' (zoo-faulty 0.3.1) failed checking ensemble.args: prefer: no model is named "
            "'tinyy'; the pipeline's models are tiny",
        ),
    ],
)
def test_bind_rejects_a_one_model_pipeline_before_the_weights_load(
    faulty, unloadable, synthetic_vspw, zoo_cli, tmp_path, ensemble, message
):
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("tiny", unloadable)], ensemble=ensemble)
    out = tmp_path / "out"
    result = zoo_cli("run", path, "--out", out)
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [message]  # not the unreadable weights: they were never reached
    assert not out.exists(), "nothing is written before the pipeline is checked"

    ensemble["args"] = {"weights": {"tiny": 1.0}} if ensemble["type"] == "weighted" else {"prefer": "tiny"}
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("tiny", unloadable)], ensemble=ensemble)
    result = zoo_cli("run", path, "--out", out)
    assert result.exit_code != 0 and "model.safetensors is truncated or corrupt" in result.stderr  # now it is


def test_bind_receives_the_pipeline_for_every_component(faulty, models, synthetic_vspw, zoo_cli, tmp_path):
    records = {name: tmp_path / f"{name}.json" for name in ("tta-a", "tta-b", "ensembler")}
    pipeline = {
        "data": {"root": str(synthetic_vspw.root), "split": "val", "max_videos": 1},
        "models": [
            {
                "name": name,
                "weights": str(models["tiny"]),
                "tta": {"type": "fail-tta", "args": {"record": str(records[f"tta-{name}"])}},
            }
            for name in ("a", "b")
        ],
        "ensemble": {"type": "fail-at", "args": {"record": str(records["ensembler"])}},
        "runtime": {"amp": "none", "progress": False},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    result = zoo_cli("run", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    common = {"model_names": ["a", "b"], "class_names": CLASS_NAMES, "num_classes": 124, "device": "cpu"}
    assert json.loads(records["tta-a"].read_text()) == {**common, "kind": "tta", "where": "models[0].tta"}
    assert json.loads(records["tta-b"].read_text()) == {**common, "kind": "tta", "where": "models[1].tta"}
    assert json.loads(records["ensembler"].read_text()) == {**common, "kind": "ensembler", "where": "ensemble"}


# -- models that cannot run together, or at all ------------------------------------------------------


def test_a_model_whose_plugin_is_not_installed_names_it_its_config_and_what_to_install(
    models, synthetic_vspw, run_zoo, tmp_path
):
    # The child process has no zoo-faulty: the model's head is unknown there.
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("tiny", models["tiny"]), ("boom", models["exploding"])])
    result = run_zoo("run", path, "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert line.startswith(
        f"error: models[1] (boom): {models['exploding'] / 'config.json'}: cannot rebuild the model: unknown head "
        "'exploding'; installed heads: "
    )
    assert line.endswith("(it was saved with: zoo-core 0.1.0, zoo-faulty 0.3.1; install those distributions)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda names: names.__setitem__(5, "renamed"),
            "error: models[1] (b): class 5 is 'renamed', but 'class-5' in models[0] (a); an ensemble needs models "
            "trained on the same label set, the classes in the same order",
        ),
        (
            lambda names: names.reverse(),
            "error: models[1] (b): class 0 is 'class-123', but 'class-0' in models[0] (a); an ensemble needs models "
            "trained on the same label set, the classes in the same order",
        ),
        (
            lambda names: names.pop(),
            "error: models[1] (b): its config.json lists 123 class names, that of models[0] (a) 124; an ensemble "
            "needs models trained on the same label set, the classes in the same order",
        ),
    ],
)
def test_models_with_as_many_but_other_classes_name_the_first_difference(
    models, synthetic_vspw, run_zoo, tmp_path, change, message
):
    other = Path(shutil.copytree(models["tiny"], tmp_path / "other"))
    config = json.loads((other / "config.json").read_text())
    change(config["class_names"])
    (other / "config.json").write_text(json.dumps(config))
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("a", models["tiny"]), ("b", other)])
    result = run_zoo("run", path, "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [message]


@pytest.mark.parametrize("names", [None, 5, ["wall", 3]])
def test_class_names_that_are_absent_or_not_names_are_one_line(models, synthetic_vspw, run_zoo, tmp_path, names):
    other = Path(shutil.copytree(models["tiny"], tmp_path / "other"))
    config = json.loads((other / "config.json").read_text())
    if names is None:
        del config["class_names"]
    else:
        config["class_names"] = names
    (other / "config.json").write_text(json.dumps(config))
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("a", models["tiny"]), ("b", other)])
    result = run_zoo("run", path, "--out", tmp_path / "out")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    expected = (
        "error: models[1] (b): its config.json records no class names, that of models[0] (a) does; an ensemble"
        if names is None
        else f"error: {other / 'config.json'}: class_names must be a list of names; restore the file or pull it again"
    )
    (line,) = error_lines(result.stderr)
    assert line.startswith(expected)


FLAT_PLUGIN = '''
from torch import nn

from zoo_core import hookimpl


class Flat(nn.Module):
    """A backbone that does not say what its feature maps are (no channels, no strides)."""

    def forward(self, images):
        return [images]


@hookimpl
def zoo_backbones():
    return {"flat": Flat}
'''


def test_a_plugin_backbone_without_channels_and_strides_is_named(synthetic_vspw, run_zoo, tmp_path):
    site = Site(tmp_path / "site")
    site.root.mkdir()
    site.add("zoo-flat", "0.2.0", "zoo_flat", FLAT_PLUGIN, entry_point="flat")
    model = {"num_classes": 124, "backbone": {"type": "flat"}, "heads": TINY_MODEL["heads"]}
    path = train_file(tmp_path, synthetic_vspw.root, model, {"type": "ce"})
    result = run_zoo("train", path, "--out", tmp_path / "out", env=site.env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        "error: backbone 'flat' (zoo-flat 0.2.0) has no `channels` and `strides` (one per feature map, given to "
        "the heads); its plugin does not follow zoo_core.interfaces.Backbone: update the plugin or report it to "
        "its maintainers"
    ]


def test_the_png_writer_is_closed_whatever_fails(models, synthetic_vspw, tmp_path, monkeypatch):
    from zoo_core.errors import DataError
    from zoo_core.inference.sinks import PngWriter
    from zoo_core.pipeline import run
    from zoo_core.pipeline.schema import load_pipeline

    writers = []

    class Recorded(PngWriter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.closed = False
            writers.append(self)

        def close(self):
            super().close()
            self.closed = True

    monkeypatch.setattr(run, "PngWriter", Recorded)
    root = Path(shutil.copytree(synthetic_vspw.root, tmp_path / "data"))
    path = pipeline_file(tmp_path, root, [("tiny", models["tiny"])])
    run.run_pipeline(load_pipeline(path), tmp_path / "good", log=lambda message: None)
    assert [w.closed for w in writers] == [True]

    # A video without frames fails when the frames are counted, before the first prediction.
    for frame in (root / "data" / synthetic_vspw.splits["val"][-1] / "origin").iterdir():
        frame.unlink()
    with pytest.raises(DataError, match="holds no .jpg or .png frames"):
        run.run_pipeline(load_pipeline(path), tmp_path / "bad", log=lambda message: None)
    assert all(w.closed for w in writers), "a PNG writer was left open"


# -- the run directory ---------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "[]", "[1, 2]", '{"pipeline": {}}', "\xff\xfe"])
def test_a_pipeline_json_no_run_wrote_is_a_clear_error(models, synthetic_vspw, zoo_cli, tmp_path, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pipeline.json").write_bytes(content.encode("latin-1"))
    path = pipeline_file(tmp_path, synthetic_vspw.root, [("tiny", models["tiny"])])
    result = zoo_cli("run", path, "--out", out)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert str(out / "pipeline.json") in line
    assert ("not the record of a `zoo run`" in line) if content.startswith(("[", "{")) else ("unreadable" in line)
    assert line.endswith(f"choose another --out, or delete {out} to start over")
    assert (out / "pipeline.json").read_bytes() == content.encode("latin-1"), "the file is left as it was"


# -- zoo train ------------------------------------------------------------------------------------


def train_file(folder: Path, data_root: Path, model: dict, loss: dict) -> Path:
    pipeline = {
        "data": {"root": str(data_root), "split": "val"},
        "model": model,
        "train": {
            "split": "train",
            "max_iters": 4,
            "batch_size": 2,
            "lr": 1e-3,
            "checkpoint_every": 0,
            "transforms": [{"type": "flip"}],
            "loss": loss,
        },
        "runtime": {"amp": "none", "progress": False},
    }
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


@pytest.mark.parametrize(
    "model, loss, message",
    [
        (
            TINY_MODEL,
            {"type": "fail-loss", "args": {"at": 2}},  # two heads: call 2 is the first of iteration 2
            "error: loss 'fail-loss' (zoo-faulty 0.3.1) failed at iteration 2: "
            "ValueError: the loss is not defined here",
        ),
        (
            EXPLODING_MODEL,
            {"type": "ce"},  # one forward per iteration: forward 3 is iteration 4
            "error: model (backbone 'timm' from zoo-core 0.1.0, head 'exploding' from zoo-faulty 0.3.1) failed at "
            "iteration 4: RuntimeError: the head exploded",
        ),
    ],
)
def test_train_failure_names_the_component_and_the_iteration(
    faulty, synthetic_vspw, zoo_cli, tmp_path, model, loss, message
):
    result = zoo_cli("train", train_file(tmp_path, synthetic_vspw.root, model, loss), "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [message]


def test_train_binds_the_loss_before_the_model_is_built(faulty, synthetic_vspw, zoo_cli, tmp_path):
    # a head the catalog cannot build: reaching the model would fail with another message
    broken = dict(TINY_MODEL, heads=[{"type": "exploding", "args": {"at": 0, "no_such_argument": 1}}])
    loss = {"type": "fail-loss", "args": {"classes": ["wall", "no-such-class"]}}
    out = tmp_path / "out"
    result = zoo_cli("train", train_file(tmp_path, synthetic_vspw.root, broken, loss), "--out", out)
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        "error: loss 'fail-loss' (zoo-faulty 0.3.1) failed checking train.loss.args: classes: no-such-class not "
        "among the 124 classes"
    ]
    assert not out.exists()


def test_a_policy_or_ensembler_returning_another_shape_is_named():
    from zoo_core.inference.predictor import ModelRunner, Predictor

    class Uniform(torch.nn.Module):
        def predict(self, images):
            return torch.full((images.shape[0], 3, *images.shape[-2:]), 1 / 3)

    images = torch.zeros(1, 3, 8, 12)
    halving = ModelRunner(
        "m",
        Uniform(),
        lambda predict, x: predict(x)[..., ::2, ::2],
        torch.device("cpu"),
        label="model 'm'",
        tta_label="tta 'half' (zoo-half 1.0) of model 'm'",
    )
    with pytest.raises(
        ComponentError,
        match=r"^tta 'half' \(zoo-half 1\.0\) of model 'm' failed: returned shape "
        r"\(1, 3, 4, 6\); expected class probabilities of shape \(1, C, 8, 12\)$",
    ):
        Predictor([halving], None)(images)

    runners = [ModelRunner(name, Uniform(), lambda predict, x: predict(x), torch.device("cpu")) for name in "ab"]
    with pytest.raises(ComponentError, match=r"^ensembler 'list' failed: returned a list; expected"):
        Predictor(runners, lambda per_model: list(per_model.values()), "ensembler 'list'")(images)
    labels = Predictor(runners, lambda per_model: per_model["a"], "ensembler 'first'")(images)
    assert labels.shape == (1, 8, 12) and labels.dtype == torch.uint8


def test_a_factory_failing_otherwise_than_on_its_arguments_is_named():
    from zoo_core.catalog import Catalog, Entry

    def flaky(path="stats.bin"):
        raise OSError(28, "No space left on device")

    catalog = Catalog()
    catalog.add(Entry("loss", "flaky", flaky, "zoo-flaky", "2.0", "flaky"))
    with pytest.raises(ComponentError) as info:
        catalog.build("loss", "flaky")
    assert str(info.value) == (
        "loss 'flaky' (zoo-flaky 2.0) failed while being built: OSError: [Errno 28] No space left on device"
    )
    assert info.value.exit_code == 2 and isinstance(info.value.__cause__, OSError)
