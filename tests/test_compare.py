"""``zoo compare``: two real runs of one model, and hand-written run directories for the numbers and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

CLASSES = ["wall", "sky", "tree", "road"]


def write_run(folder: Path, split: str = "val", classes: list[str] | None = None, videos=("v1", "v2"), **metrics):
    """A run directory as `zoo run` leaves it: pipeline.json (the split), state/<video>.npz and metrics.json."""
    folder.mkdir(parents=True)
    (folder / "pipeline.json").write_text(json.dumps({"fingerprint": "x", "pipeline": {"data": {"split": split}}}))
    (folder / "state").mkdir()
    for video in videos:
        (folder / "state" / f"{video}.npz").write_bytes(b"")
    per_class = metrics.pop("per_class_iou", None)
    names = classes or CLASSES
    record = {"miou": 0.5, "mvc8": 0.8, "mvc16": 0.7, "pixel_acc": 0.9, "mean_class_acc": 0.6, "fwiou": 0.85}
    record.update(metrics)
    record["per_class_iou"] = per_class or dict.fromkeys(names, 0.5)
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def test_table_numbers_gains_and_losses(zoo_cli, tmp_path):
    base = write_run(
        tmp_path / "base", miou=0.5, mvc8=0.8, per_class_iou={"wall": 0.5, "sky": 0.9, "tree": 0.2, "road": None}
    )
    other = write_run(
        tmp_path / "adjusted",
        miou=0.5625,
        mvc8=0.75,
        mvc16=None,
        per_class_iou={"wall": 0.6, "sky": 0.85, "tree": 0.45, "road": 0.3},
    )
    result = zoo_cli("compare", base, other, "--out", tmp_path / "cmp", "--names", "plain,la", "--top", "2")
    assert result.exit_code == 0, result.output
    assert "| mIoU | 50.00 | 56.25 (+6.25) |" in result.stdout
    assert "| mVC8 | 80.00 | 75.00 (-5.00) |" in result.stdout
    assert "| mVC16 | 70.00 | n/a (n/a) |" in result.stdout
    # road is absent from the baseline's ground truth: no difference for it
    assert "- gained most: tree +25.00, wall +10.00" in result.stdout
    assert "- lost most: sky -5.00" in result.stdout
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert data["split"] == "val" and data["baseline"] == "plain"
    delta = data["deltas"][0]
    assert delta["name"] == "la"
    assert delta["metrics"]["miou"] == pytest.approx(6.25)
    assert delta["per_class_iou"] == pytest.approx({"wall": 10.0, "sky": -5.0, "tree": 25.0})
    assert [e["class"] for e in delta["gained"]] == ["tree", "wall"]
    assert (tmp_path / "cmp" / "compare.md").read_text() == result.stdout.split("wrote ")[0]
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_real_runs(zoo_cli, tmp_path, synthetic_vspw, tiny_model_dir):
    """The same model with and without flip TTA: the table holds each run's metrics.json and their difference."""
    runs = []
    for tta in ("identity", "flip"):
        pipeline = {
            "data": {"root": str(synthetic_vspw.root), "split": "val"},
            "models": [{"name": "tiny", "weights": str(tiny_model_dir), "tta": {"type": tta}}],
            "output": {"overlays": 0},
            "runtime": {"device": "cpu", "amp": "none", "progress": False},
        }
        (tmp_path / f"{tta}.yaml").write_text(yaml.safe_dump(pipeline))
        result = zoo_cli("run", tmp_path / f"{tta}.yaml", "--out", tmp_path / tta)
        assert result.exit_code == 0, result.output
        runs.append(json.loads((tmp_path / tta / "metrics.json").read_text()))
    result = zoo_cli("compare", tmp_path / "identity", tmp_path / "flip", "--split", "val", "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["identity", "flip"]
    for row, metrics in zip(data["runs"], runs):
        assert row["metrics"]["miou"] == pytest.approx(100 * metrics["miou"])
        assert row["metrics"]["pixel_acc"] == pytest.approx(100 * metrics["pixel_acc"])
    diff = 100 * (runs[1]["miou"] - runs[0]["miou"])
    assert data["deltas"][0]["metrics"]["miou"] == pytest.approx(diff)
    assert f"| mIoU | {100 * runs[0]['miou']:.2f} | {100 * runs[1]['miou']:.2f} ({diff:+.2f}) |" in result.stdout


@pytest.mark.parametrize(
    ("second", "args", "expected"),
    [
        ({"split": "train"}, (), "is of split 'train', not 'val'"),
        ({"classes": ["wall", "sky", "tree", "car"]}, (), "'road' only in 'a'"),
        ({"videos": ("v1",)}, (), "evaluated 1 videos and 'a' 2"),
        ({}, ("--split", "test"), "run 'a' (" and "not 'test' as --split"),
        ({}, ("--names", "x"), "gives 1 names for 2 runs"),
        ({}, ("--names", "x,x"), "repeats a name"),
    ],
)
def test_incomparable_runs_are_refused(zoo_cli, tmp_path, second, args, expected):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", **second)
    result = zoo_cli("compare", a, b, *args, "--out", tmp_path / "cmp")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "cmp").exists()


def test_run_without_metrics_or_stamp_says_what_to_run(zoo_cli, tmp_path):
    a = write_run(tmp_path / "a")
    unfinished = write_run(tmp_path / "unfinished")
    (unfinished / "metrics.json").unlink()
    result = zoo_cli("compare", a, unfinished)
    assert result.exit_code == 1
    assert "has no metrics.json" in result.stderr and f"zoo run PIPELINE --out {unfinished}" in result.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    result = zoo_cli("compare", a, plain)
    assert "is not a `zoo run` directory (no pipeline.json)" in result.stderr
    (unfinished / "metrics.json").write_text(json.dumps({"miou": 57.6, "per_class_iou": {"wall": 0.5}}))
    result = zoo_cli("compare", a, unfinished)
    assert "field 'miou' is 57.6, expected a fraction in 0..1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = zoo_cli("compare", a)
    assert result.exit_code == 2 and "needs two or more run directories" in result.stderr
    result = zoo_cli("compare", a, tmp_path / "nope")
    assert (
        result.stderr
        == f"error: run directory {tmp_path / 'nope'} does not exist; give the --out directory of a `zoo run`\n"
    )
