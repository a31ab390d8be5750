"""`zoo ensemble search`: every grid point scored in one pass, equal to `zoo run` with its weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_MODEL, zoo_environment

from zoo_core.ensemble import fuse
from zoo_core.ensembling.search import GridScorer, GridStats
from zoo_core.evaluation.evaluator import StreamingEvaluator
from zoo_core.model_dir import build_segmentor, save_model_dir
from zoo_core.testing import run_cli

if TYPE_CHECKING:
    from click.testing import Result

WINDOWS = [2, 4]  # the synthetic videos have 8 frames: mVC8 would have no window


def make_model(path: Path, seed: int) -> Path:
    """An untrained tiny model: shared random weights plus 5% noise of its own, as ensemble members
    trained with different seeds mostly agree (here on about two thirds of the pixels)."""
    torch.manual_seed(0)
    model = build_segmentor(TINY_MODEL).eval()
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1:
                parameter += 0.05 * parameter.std() * torch.randn(parameter.shape, generator=noise)
    save_model_dir(model, TINY_MODEL, path, extra={"class_names": None})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Three tiny models that disagree at some pixels."""
    folder = tmp_path_factory.mktemp("models")
    return {name: make_model(folder / name, seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))}


def write_pipeline(folder: Path, root: Path, models: dict[str, Path], ensemble: dict, **sections) -> Path:
    pipeline = {
        "data": {"root": str(root), "split": "val"},
        "models": [{"name": n, "weights": str(w)} for n, w in models.items()],
        "ensemble": ensemble,
        "eval": {"windows": WINDOWS},
        "runtime": {"amp": "bf16", "progress": False, "threads": 1},  # bf16: exact ties between classes
        "output": {"overlays": 0},
    }
    pipeline.update(sections)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    return path


def metrics_of(entry: dict) -> dict:
    return {k: entry[k] for k in ("miou", *(f"mvc{c}" for c in WINDOWS))}


# -- the scorer against the full fusion of every point, on random terms ------------------------------


def test_scorer_is_bitwise_the_full_fusion_of_every_point():
    """Random terms rounded to bf16 (ties within and across terms), weights with zeros: per point the
    confusion matrix is the one of fuse + argmax, and mVC the StreamingEvaluator's, bit for bit."""
    rng = np.random.default_rng(0)
    classes, height, width, windows = 10, 12, 14, (2, 3)
    weights = np.array([[a, b, 1.0] for a in (0.0, 0.3, 1.0) for b in (0.0, 0.7, 2.0)])
    scorer = GridScorer(weights, classes, windows)
    evaluators = [StreamingEvaluator(classes, windows) for _ in weights]
    total = GridStats.empty(len(weights), classes, len(windows))
    for video, noise in enumerate((0.3, 0.02)):  # many contested pixels, then few
        scorer.start_video()
        for evaluator in evaluators:
            evaluator.start_video(str(video))
        shared = rng.random((classes, height, width)).astype(np.float32)
        for _ in range(7):
            terms = [
                torch.from_numpy(shared + noise * rng.random(shared.shape).astype(np.float32))
                .bfloat16()
                .float()
                .numpy()
                for _ in range(3)
            ]
            gt = rng.integers(0, classes, (height, width)).astype(np.uint8)
            gt[rng.random(gt.shape) < 0.1] = 255
            scorer.update(terms, gt)
            for w, evaluator in zip(weights, evaluators):
                fused = fuse([torch.from_numpy(t) for t in terms], w.tolist())
                evaluator.update(fused.argmax(0).numpy().astype(np.uint8), gt)
        total.add(scorer.end_video())
        for evaluator in evaluators:
            evaluator.end_video()
    assert 0 < scorer.contested < scorer.pixels
    names = [str(c) for c in range(classes)]
    for p, evaluator in enumerate(evaluators):
        assert np.array_equal(total.confusion(p), evaluator.confusion_matrix), p
        assert total.metrics(p, names, windows) == evaluator.result(names), p


# -- end to end ----------------------------------------------------------------------------------------


def brute_force(cache: Path, dataset_root: Path, points: list[dict], names: list[str]) -> list[dict]:
    """Every point's metrics from the float32 cache, fusing whole frames as `zoo run` does."""
    from zoo_core.data.vspw import VSPWDataset

    dataset = VSPWDataset(dataset_root, "val")
    folders = {json.loads(p.read_text())["model"]: p.parent for p in cache.glob("*/cache.json")}
    evaluators = [StreamingEvaluator(124, WINDOWS) for _ in points]
    for video in dataset.videos:
        probs = [np.load(folders[n] / f"{video}.npy") for n in names]
        for evaluator in evaluators:
            evaluator.start_video(video)
        for i, ref in enumerate(dataset.frames(video)):
            gt = dataset.load_mask(ref)
            for point, evaluator in zip(points, evaluators):
                fused = fuse([torch.from_numpy(p[i]) for p in probs], [point["weights"][n] for n in names])
                evaluator.update(fused.argmax(0).numpy().astype(np.uint8), gt)
        for evaluator in evaluators:
            evaluator.end_video()
    return [e.result([str(c) for c in range(124)]) for e in evaluators]


GRID = ["--grid", "a=0:1:0.5", "--grid", "b=0:2:1"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, synthetic_vspw, models) -> tuple[Path, Path, Path, dict, Result]:
    """A search of three models over a 3 x 3 grid with a float32 cache: pipeline, out, cache, search.json, result."""
    folder = tmp_path_factory.mktemp("searched")
    pipeline = write_pipeline(
        folder, synthetic_vspw.root, models, {"type": "weighted", "args": {"weights": {"a": 1, "b": 1, "c": 1}}}
    )
    out, cache = folder / "search", folder / "cache"
    result = run_cli("ensemble", "search", pipeline, *GRID, "--out", out, "--cache", cache, "--cache-dtype", "float32")
    assert result.exit_code == 0, result.output
    return pipeline, out, cache, json.loads((out / "search.json").read_text()), result


def test_search_equals_zoo_run_and_the_brute_force(tmp_path, zoo_cli, synthetic_vspw, searched):
    pipeline, out, cache, found, result = searched
    assert found["exact"] is True and found["metric"] == "miou" and len(found["points"]) == 9
    assert 0 < found["contested_pixels"] < 1
    assert [p["weights"]["c"] for p in found["points"]] == [1.0] * 9
    assert found["best"]["miou"] == max(p["miou"] for p in found["points"])
    assert (out / "search.png").stat().st_size > 0
    table = result.stdout.splitlines()
    assert table[0].split() == ["#", "a", "b", "mIoU", "mVC2", "mVC4"] and len(table) == 1 + 9 + 2

    # the brute force: each point fused on whole frames from the float32 cache
    reference = brute_force(cache, synthetic_vspw.root, found["points"], ["a", "b", "c"])
    for point, expected in zip(found["points"], reference):
        assert metrics_of(point) == metrics_of(expected), point["weights"]

    # zoo run with the best weights (best.yaml pasted) and with the runner-up's (--set)
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["ensemble"] == {"type": "weighted", "args": {"weights": found["best"]["weights"]}}
    second = found["top"][1]
    runs = [
        (found["best"], ["--set", f"ensemble={json.dumps(best['ensemble'])}"]),
        (second, [item for n, v in second["weights"].items() for item in ("--set", f"ensemble.args.weights.{n}={v}")]),
    ]
    for i, (entry, sets) in enumerate(runs):
        run = zoo_cli("run", pipeline, "--out", tmp_path / f"run{i}", *sets)
        assert run.exit_code == 0, run.output
        metrics = json.loads((tmp_path / f"run{i}" / "metrics.json").read_text())
        for key in ("miou", "mvc2", "mvc4", "pixel_acc", "fwiou"):
            assert metrics[key] == pytest.approx(entry[key], abs=1e-9), (entry["weights"], key)
        for name, iou in metrics["per_class_iou"].items():
            assert iou == pytest.approx(entry["per_class_iou"][name], abs=1e-9, nan_ok=True), name

    # a second search from the cache runs no model and finds the same figures
    again = zoo_cli(
        "ensemble", "search", pipeline, *GRID, "--out", tmp_path / "again", "--cache", cache, "--cache-dtype", "float32"
    )
    assert again.exit_code == 0, again.output
    assert "models run: none" in again.stderr
    assert json.loads((tmp_path / "again" / "search.json").read_text())["points"] == found["points"]


def test_rounded_cache_is_marked_inexact_and_a_stale_one_is_refused(tmp_path, zoo_cli, synthetic_vspw, models):
    two = {"a": models["a"], "b": tmp_path / "b"}
    make_model(two["b"], 2)
    pipeline = write_pipeline(tmp_path, synthetic_vspw.root, two, {"type": "weighted", "args": {"gamma": 0.5}})
    cache = tmp_path / "cache"
    args = ["ensemble", "search", pipeline, "--grid", "gamma=0:1:0.25", "--cache", cache]
    args += ["--cache-stride", "2", "--cache-topk", "5"]
    result = zoo_cli(*args, "--out", tmp_path / "first")
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "first" / "search.json").read_text())
    assert found["exact"] is False and "not exact" in result.stdout
    assert [p["weights"]["gamma"] for p in found["points"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    values = np.load(next(cache.glob("*/" + synthetic_vspw.splits["val"][0] + ".npy")), mmap_mode="r")
    height, width = synthetic_vspw.size
    assert values.shape == (synthetic_vspw.frames, 5, height // 2, width // 2) and values.dtype == np.float16
    assert yaml.safe_load((tmp_path / "first" / "best.yaml").read_text())["ensemble"]["args"] == {
        "gamma": found["best"]["weights"]["gamma"]
    }

    # a video missing from one model's cache (an interrupted caching): only that model runs, same figures
    folder = next(f.parent for f in cache.glob("*/cache.json") if json.loads(f.read_text())["model"] == "a")
    for path in folder.glob(synthetic_vspw.splits["val"][1] + ".*"):
        path.unlink()
    resumed = zoo_cli(*args, "--out", tmp_path / "resumed")
    assert resumed.exit_code == 0, resumed.output
    assert "models run: a\n" in resumed.stderr
    assert json.loads((tmp_path / "resumed" / "search.json").read_text())["points"] == found["points"]

    make_model(two["b"], 7)  # other weights under the same name
    stale = zoo_cli(*args, "--out", tmp_path / "second")
    assert stale.exit_code == 2
    assert stale.stderr.splitlines()[-1].startswith("error: ") and "Traceback" not in stale.output
    assert "model 'b'" in stale.stderr and "model.safetensors" in stale.stderr and str(cache) in stale.stderr
    assert not (tmp_path / "second").exists()


@pytest.mark.parametrize(
    ("change", "args", "expected"),
    [
        ({}, ["--grid", "a=1:0:0.1"], "STOP (0) is below START (1)"),
        ({}, ["--grid", "a=0:1:0"], "STEP must be > 0"),
        ({}, ["--grid", "a=0:1"], "expected NAME=START:STOP:STEP"),
        ({}, ["--grid", "a=0:x:1"], "must be numbers"),
        ({}, ["--grid", "gamma=0:1:0.5"], "its weights are: a, b, c"),
        ({}, ["--grid", "a=0:1:0.001", "--grid", "b=0:1:0.001"], "1,002,001 points, more than 100,000"),
        ({}, ["--grid", "a=0:1:0.5", "--metric", "mvc8"], "choose one of miou, mvc2, mvc4"),
        ({"ensemble": {"type": "mean"}}, ["--grid", "a=0:1:0.5"], "has no weights to search"),
        ({"data.split": "test"}, ["--grid", "a=0:1:0.5"], "has no ground-truth masks"),
        ({"models": 1}, ["--grid", "a=0:1:0.5"], "needs an ensemble of at least two models"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, zoo_cli, synthetic_vspw, models, change, args, expected):
    chosen = {"a": models["a"]} if change.get("models") == 1 else models
    ensemble = change.get("ensemble", {"type": "weighted", "args": {"weights": {n: 1 for n in chosen}}})
    pipeline = write_pipeline(tmp_path, synthetic_vspw.root, chosen, ensemble)
    sets = ["--set", f"data.split={change['data.split']}"] if "data.split" in change else []
    result = zoo_cli("ensemble", "search", pipeline, *args, *sets, "--out", tmp_path / "out", "--cache", tmp_path / "c")
    assert result.exit_code != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()


def test_two_processes_give_the_one_process_result(tmp_path, searched):
    """Real torchrun, no cache: each rank scores its videos, rank 0 merges them in the one-process order."""
    pipeline, _, _, first, _ = searched
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo_core.cli",
            "ensemble",
            "search",
            str(pipeline),
            *GRID,
            "--out",
            str(tmp_path / "two"),
            "--nproc",
            "2",
        ],
        env=zoo_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr
    second = json.loads((tmp_path / "two" / "search.json").read_text())
    assert second["points"] == first["points"] and second["top"] == first["top"]
    assert second["videos"] == 2 and second["frames"] == first["frames"] == 16
