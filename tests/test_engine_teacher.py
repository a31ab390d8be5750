"""A loss with ``needs_teacher = True``: `zoo train` loads its frozen teacher once and fills ``context.teacher``.

The teacher-using loss comes from a real third-party distribution (``zoo-teacher-probe``, a
package plus its ``dist-info`` on ``sys.path``); it records what the engine gave it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import zoo_environment
from safetensors.torch import load_file
from test_plugins import Site

from zoo_core.data.vspw import VSPWDataset
from zoo_core.model_dir import build_segmentor, load_model_dir, save_model_dir
from zoo_core.plugins import reset_registry
from zoo_core.testing import TINY_MODEL

PROBE = ("zoo-teacher-probe", "0.2.0")

PROBE_PLUGIN = '''
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from zoo_core import hookimpl


class ProbeLoss:
    """Cross-entropy plus the squared distance to the teacher's probabilities; records what it got."""

    needs_teacher = True

    def __init__(self, teacher, record=None):
        self.teacher, self.record = teacher, record

    def __call__(self, output, target, context):
        logits = F.interpolate(output, size=target.shape[-2:], mode="bilinear", align_corners=False).float()
        teacher = F.interpolate(context.teacher.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        if self.record and context.head_index == 0:
            save_file(
                {"images": context.images.float().contiguous(), "teacher": context.teacher.float().contiguous()},
                str(Path(self.record) / f"iter_{context.iteration}.safetensors"),
                metadata={"dtype": str(context.teacher.dtype), "grad": str(context.teacher.requires_grad)},
            )
        pull = (logits.softmax(1) - teacher.softmax(1)).square().mean()
        return F.cross_entropy(logits, target, ignore_index=255) + pull


@hookimpl
def zoo_losses():
    return {"probe-teacher": ProbeLoss}
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("site"))
    site.add(*PROBE, "zoo_teacher_probe", PROBE_PLUGIN, entry_point="teacher-probe")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site.root))
        reset_registry()
        yield site
    for module in [m for m in sys.modules if m.split(".")[0] == "zoo_teacher_probe"]:
        del sys.modules[module]
    reset_registry()


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, synthetic_vspw) -> dict[str, Path]:
    """Model directories: a teacher of the data's classes, one with other names, one with fewer classes."""
    folder = tmp_path_factory.mktemp("teachers")
    names = list(VSPWDataset(synthetic_vspw.root, "train").class_names)
    renamed = ["not-" + names[0], *names[1:]]
    fewer = dict(TINY_MODEL, num_classes=10)
    made = {}
    for key, config, class_names, seed in (
        ("good", TINY_MODEL, names, 1),
        ("other", TINY_MODEL, names, 2),
        ("renamed", TINY_MODEL, renamed, 1),
        ("fewer", fewer, names[:10], 1),
    ):
        torch.manual_seed(seed)
        save_model_dir(build_segmentor(config).eval(), config, folder / key, extra={"class_names": class_names})
        made[key] = folder / key
    return made


def train_file(folder: Path, data_root: Path, teacher: Path | str, record: bool = True, **train) -> Path:
    pipeline = {
        "data": {"root": str(data_root), "split": "val"},
        "model": TINY_MODEL,
        "train": {
            "max_iters": 2,
            "batch_size": 2,
            "lr": 1e-3,
            "log_every": 1,
            "checkpoint_every": 0,
            "transforms": [{"type": "random-crop", "size": [48, 64]}, {"type": "flip"}],
            "loss": {
                "type": "probe-teacher",
                "args": {"teacher": str(teacher), "record": str(folder / "seen") if record else None},
            },
            **train,
        },
        "runtime": {"amp": "none", "progress": False, "threads": 1},
    }
    (folder / "seen").mkdir(exist_ok=True)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_the_teacher_runs_frozen_on_the_augmented_batch_and_is_recorded(
    probe, teachers, synthetic_vspw, zoo_cli, tmp_path
):
    before = {name: sha256(teachers["good"] / name) for name in ("config.json", "model.safetensors")}
    result = zoo_cli("train", train_file(tmp_path, synthetic_vspw.root, teachers["good"]), "--out", "out")
    assert result.exit_code == 0, result.output

    teacher, _ = load_model_dir(teachers["good"])
    for iteration in (1, 2):
        seen = load_file(str(tmp_path / "seen" / f"iter_{iteration}.safetensors"))
        # the micro-batch after augmentation (cropped to 48x64 from 64x96 frames), not the raw frames
        assert seen["images"].shape == (2, 3, 48, 64)
        with torch.no_grad():
            expected = teacher(seen["images"])[-1]  # the teacher's last head: its prediction
        torch.testing.assert_close(seen["teacher"], expected, rtol=1e-4, atol=1e-5)
    with open(tmp_path / "seen" / "iter_1.safetensors", "rb") as handle:  # the safetensors header's metadata
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    assert header["__metadata__"] == {"dtype": "torch.float32", "grad": "False"}

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["teacher"]["ref"] == str(teachers["good"])
    assert config["teacher"]["sha256"] == before  # the provenance of the trained model
    assert {name: sha256(teachers["good"] / name) for name in before} == before  # and the teacher is unchanged


def test_the_teacher_runs_in_bf16_when_the_run_asks(probe, teachers, synthetic_vspw, zoo_cli, tmp_path):
    path = train_file(tmp_path, synthetic_vspw.root, teachers["good"], max_iters=1)
    result = zoo_cli("train", path, "--out", "out", "--amp", "bf16")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "seen" / "iter_1.safetensors", "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    assert header["__metadata__"]["dtype"] == "torch.bfloat16"


def test_resume_with_a_teacher_is_exact_and_refuses_another_teacher(probe, teachers, synthetic_vspw, zoo_cli, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(teachers["good"], teacher)
    path = train_file(tmp_path, synthetic_vspw.root, teacher, max_iters=4, checkpoint_every=2, keep_checkpoints=0)
    assert zoo_cli("train", path, "--out", "reference").exit_code == 0
    assert zoo_cli("train", path, "--out", "resumed").exit_code == 0
    # As if the run had died after iteration 3: only the checkpoint of iteration 2 survives.
    resumed = tmp_path / "resumed"
    for name in ("model.safetensors", "config.json"):
        (resumed / name).unlink()
    result = zoo_cli("train", path, "--out", "resumed", "--resume")
    assert result.exit_code == 0, result.output
    assert "iteration 2" in result.output
    reference, again = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("reference", "resumed"))
    assert reference.keys() == again.keys()
    assert all(torch.equal(reference[name], again[name]) for name in reference)

    # The teacher's weights changed under the same path: resuming would not be the same run.
    for name in ("model.safetensors", "config.json"):
        (resumed / name).unlink()
    shutil.copy(teachers["other"] / "model.safetensors", teacher / "model.safetensors")
    refused = zoo_cli("train", path, "--out", "resumed", "--resume")
    assert refused.exit_code == 2
    (line,) = error_lines(refused.stderr)
    label = f"the teacher '{teacher}' of loss 'probe-teacher' (zoo-teacher-probe 0.2.0)"
    assert line.startswith(f"error: --resume: {label} is not the model the run started with")
    assert "sha256" in line


@pytest.mark.parametrize(
    "teacher, message",
    [
        ("missing", "weights '{ref}': no such model directory, and not a registry card name"),
        ("fewer", "predicts 10 classes but the model being trained predicts 124; distil from a model trained on"),
        ("renamed", "has other classes than the training data: class 0 is 'not-wall' there and 'wall' here"),
    ],
)
def test_a_missing_or_mismatched_teacher_is_one_line_before_any_iteration(
    probe, teachers, synthetic_vspw, zoo_cli, tmp_path, teacher, message
):
    ref = teachers.get(teacher, tmp_path / "no-such-teacher")
    result = zoo_cli("train", train_file(tmp_path, synthetic_vspw.root, ref), "--out", "out")
    assert result.exit_code != 0
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"error: the teacher '{ref}' of loss 'probe-teacher' (zoo-teacher-probe 0.2.0)")
    assert message.format(ref=ref) in line
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "seen").iterdir())  # no iteration ran


@pytest.mark.slow
def test_ddp_with_a_teacher_matches_one_process_accumulating(probe, teachers, synthetic_vspw, tmp_path):
    torchrun, zoo = shutil.which("torchrun"), shutil.which("zoo")
    assert torchrun and zoo, "torchrun and zoo must be on PATH (pip install -e .)"
    path = train_file(tmp_path, synthetic_vspw.root, teachers["good"], record=False, max_iters=2)
    runs = {
        "ddp": [torchrun, "--standalone", "--nproc_per_node=2", zoo, "train", str(path), "--out", "ddp"],
        "single": [sys.executable, "-m", "zoo_core.cli", "train", str(path), "--out", "single"],
    }
    for name, command in runs.items():
        extra = ["--set", "train.accum_steps=2"] if name == "single" else []
        result = subprocess.run(
            command + extra, cwd=tmp_path, env=zoo_environment(probe.env), capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in runs)
    for name in [n for n in a if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))]:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)
