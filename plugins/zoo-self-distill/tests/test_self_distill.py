"""The self-distill loss: the KL with temperature by hand, the loss contract, a real zoo train, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from zoo_core.interfaces import LossContext, MaskClassification
from zoo_core.model_dir import build_segmentor, read_model_config, save_model_dir
from zoo_core.testing import TINY_MODEL, check_loss


def test_the_loss_comes_from_this_distribution_and_needs_a_teacher(zoo_registry):
    entry = zoo_registry.catalog.get("loss", "self-distill")
    assert entry.distribution == "zoo-self-distill"
    assert entry.factory.needs_teacher is True


def test_the_loss_keeps_the_loss_contract(zoo_registry):
    factory = zoo_registry.catalog.get("loss", "self-distill").factory
    check_loss(factory, name="self-distill", teacher="unused", temperature=2.0, amp="bf16")
    check_loss(factory, name="self-distill", teacher="unused", mask_classification=True)
    check_loss(factory, name="self-distill", teacher="unused", base={"type": "ohem-ce", "args": {"min_kept": 10}})


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def tempered(logits: list[float], t: float) -> list[float]:
    e = [math.exp(z / t) for z in logits]
    return [x / sum(e) for x in e]


def test_ce_plus_lambda_t2_kl_over_labelled_pixels_by_hand(zoo_registry):
    loss = zoo_registry.catalog.build(
        "loss", "self-distill", {"teacher": "unused", "distill_weight": 0.5, "temperature": 2.0}, num_classes=2
    )
    # a 2x2 image, 2 classes; pixel (1, 0) is void
    student = [[[0.0, 2.0], [1.0, -1.0]], [[0.0, 0.0], [3.0, 1.0]]]  # [class][row][col]
    teacher = [[[1.0, 0.0], [-4.0, 0.0]], [[-1.0, 2.0], [4.0, 0.0]]]
    target = [[0, 1], [255, 1]]
    ce = kls = 0.0
    for row, col in ((0, 0), (0, 1), (1, 1)):
        s = [student[c][row][col] for c in range(2)]
        t = [teacher[c][row][col] for c in range(2)]
        ce += -math.log(tempered(s, 1.0)[target[row][col]]) / 3
        kls += kl(tempered(t, 2.0), tempered(s, 2.0)) / 3
    expected = ce + 0.5 * 2.0**2 * kls
    context = LossContext(teacher=torch.tensor([teacher]))
    value = loss(torch.tensor([student], requires_grad=True), torch.tensor([target]), context)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # the teacher at the void pixel takes no part
    context.teacher[0, :, 1, 0] = torch.tensor([9.0, -9.0])
    assert loss(torch.tensor([student]), torch.tensor([target]), context).item() == pytest.approx(expected, rel=1e-6)


def test_mask_classification_outputs_are_compared_by_their_semantic_scores(zoo_registry):
    loss = zoo_registry.catalog.build("loss", "self-distill", {"teacher": "unused"}, num_classes=2)
    # one query per class with certain class logits: the scores are the masks' sigmoids, normalised
    classes = torch.tensor([[[20.0, -20.0, -20.0], [-20.0, 20.0, -20.0]]])
    student = MaskClassification(classes, torch.tensor([[[[0.0]], [[math.log(3.0)]]]]))  # sigmoid 1/2, 3/4
    teacher = MaskClassification(classes, torch.tensor([[[[math.log(3.0)]], [[0.0]]]]))  # 3/4, 1/2
    target = torch.tensor([[[0]]])
    # student p = (0.4, 0.6), teacher p = (0.6, 0.4); CE = -ln 0.4
    expected = -math.log(0.4) + kl([0.6, 0.4], [0.4, 0.6])
    assert loss(student, target, LossContext(teacher=teacher)).item() == pytest.approx(expected, rel=1e-5)


# -- through zoo train ---------------------------------------------------------------------------------------


def train_file(folder: Path, root: Path, loss_args: dict, max_iters: int = 2) -> Path:
    pipeline = {
        "data": {"root": str(root), "split": "val"},
        "model": TINY_MODEL,
        "train": {
            "max_iters": max_iters,
            "batch_size": 2,
            "lr": 2e-3,
            "log_every": 1,
            "checkpoint_every": 0,
            "transforms": [{"type": "random-crop", "size": [64, 96]}, {"type": "flip"}],
            "loss": {"type": "self-distill", "args": loss_args},
        },
        "runtime": {"amp": "none", "progress": False, "threads": 1},
    }
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def test_a_student_trains_from_a_frozen_teacher(zoo_cli, synthetic_vspw, tiny_model_dir, tmp_path):
    path = train_file(tmp_path, synthetic_vspw.root, {"teacher": str(tiny_model_dir), "temperature": 2.0}, 8)
    result = zoo_cli("train", path, "--out", "student")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "student" / "train_log.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(math.isfinite(r["loss"]) for r in records)
    assert sum(r["loss"] for r in records[-3:]) < sum(r["loss"] for r in records[:3])
    config = read_model_config(tmp_path / "student")
    assert config["teacher"]["ref"] == str(tiny_model_dir)
    assert set(config["teacher"]["sha256"]) == {"config.json", "model.safetensors"}
    loss_record = [c for c in config["provenance"]["components"] if c["kind"] == "loss"]
    assert loss_record == [
        {"kind": "loss", "name": "self-distill", "distribution": "zoo-self-distill", "version": "0.1.0",
         "where": "train.loss"}
    ]  # fmt: skip


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"teacher": "no-such-teacher"}, "weights 'no-such-teacher': no such model directory"),
        ({"teacher": "fewer"}, "predicts 10 classes but the model being trained predicts 124"),
        ({"teacher": "TINY", "temperature": 0}, "self-distill loss: temperature must be > 0, got 0"),
        ({"teacher": "TINY", "distill_weight": -1}, "self-distill loss: distill_weight must be >= 0, got -1"),
    ],
)
def test_bad_input_is_one_line_before_any_iteration(zoo_cli, synthetic_vspw, tiny_model_dir, tmp_path, args, message):
    fewer = dict(TINY_MODEL, num_classes=10)
    save_model_dir(
        build_segmentor(fewer), fewer, tmp_path / "fewer", extra={"class_names": [str(i) for i in range(10)]}
    )
    args = {k: str(tiny_model_dir) if v == "TINY" else v for k, v in args.items()}
    result = zoo_cli("train", train_file(tmp_path, synthetic_vspw.root, args), "--out", "out")
    assert result.exit_code != 0
    (line,) = error_lines(result.stderr)
    assert message in line, line
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_maskformer_student_distils_from_a_maskformer_teacher(zoo_cli, synthetic_vspw, tiny_model_dir, tmp_path):
    presets = pytest.importorskip("zoo_maskformer.presets", reason="the MaskFormer parts need zoo-maskformer")
    config = presets.model_config("maskformer-mini", 124)
    names = read_model_config(tiny_model_dir)["class_names"]  # the synthetic data's classes
    save_model_dir(build_segmentor(config).eval(), config, tmp_path / "teacher", extra={"class_names": names})
    args = {"teacher": "teacher", "base": {"type": "maskformer"}, "temperature": 2.0}
    path = train_file(tmp_path, synthetic_vspw.root, args, 2)
    pipeline = yaml.safe_load(path.read_text())
    pipeline["model"] = config
    path.write_text(yaml.safe_dump(pipeline))
    result = zoo_cli("train", path, "--out", "student")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "student" / "train_log.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    assert read_model_config(tmp_path / "student")["teacher"]["ref"] == "teacher"
