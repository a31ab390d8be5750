"""`zoo ensemble search`: (a) a 21 x 21 grid from a warm cache against one evaluation pass from the same
cache with fixed weights; (b) the same search without cache against one `zoo run` of the same models.

    python benchmarks/bench_search.py [--frames 10] [--size 240x427] [--repeats 3]

Three quickstart-sized models (ResNet-10t + FCN/OCR, 64 channels), untrained: shared random weights
plus 5% noise each, so that they agree on most pixels as ensemble members trained with different
seeds do (the share of contested pixels, scored per grid point, is printed). The evaluation pass
(a) reads the same fp16 cache frame by frame, fuses with the pipeline's weights (`fuse`), takes
the argmax and feeds the StreamingEvaluator. (b) compares whole calls: `run_pipeline` (models,
PNGs, evaluation, report) against the search (models, 441 points scored, search.json, best.yaml,
search.png). Each figure is the best of the repetitions; the phases alternate.
Targets: (a) <= 2.0, (b) <= 1.15.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zoo_core.data.synth import synthesize
from zoo_core.ensembling.cache import CacheSettings
from zoo_core.ensembling.command import plan_search, search
from zoo_core.evaluation.evaluator import StreamingEvaluator
from zoo_core.model_dir import build_segmentor, save_model_dir
from zoo_core.pipeline.run import run_pipeline
from zoo_core.pipeline.schema import validate

QUICKSTART_MODEL = {
    "num_classes": 124,
    "backbone": {"type": "timm", "args": {"model_name": "resnet10t", "out_indices": [1, 2, 3]}},
    "heads": [
        {
            "type": "fcn",
            "args": {
                "in_index": [0, 1, 2],
                "input_transform": "resize_concat",
                "channels": 64,
                "num_convs": 1,
                "loss_weight": 0.4,
            },
        },
        {
            "type": "ocr",
            "args": {"in_index": [0, 1, 2], "input_transform": "resize_concat", "channels": 64, "ocr_channels": 32},
        },
    ],
}
NOISE = 0.01  # each model's own share of noise on the shared random weights
GRID = ("a=0:1:0.05", "b=0:1:0.05")  # 21 x 21 = 441 points, c stays 1


def make_model(path: Path, seed: int) -> Path:
    torch.manual_seed(0)
    model = build_segmentor(QUICKSTART_MODEL).eval()
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1:
                parameter += NOISE * parameter.std() * torch.randn(parameter.shape, generator=noise)
    save_model_dir(model, QUICKSTART_MODEL, path, extra={"class_names": None})
    return path


def evaluation_pass(plan) -> float:
    """One pass over the cache with the pipeline's weights: read, fuse, argmax, evaluate. Returns seconds."""
    start = time.perf_counter()
    evaluator = StreamingEvaluator(plan.num_classes, tuple(plan.pipeline.eval.windows))
    for video in plan.videos:
        refs = plan.dataset.frames(video)
        size = plan.dataset.load_mask(refs[0]).shape
        readers = {m.spec.name: c.frames(video, len(refs), size) for m, c in zip(plan.models, plan.caches)}
        evaluator.start_video(video)
        for ref in refs:
            per_model = {name: torch.from_numpy(next(reader))[None] for name, reader in readers.items()}
            labels = plan.ensembler(per_model).argmax(1)[0].numpy().astype(np.uint8)
            evaluator.update(labels, plan.dataset.load_mask(ref))
        evaluator.end_video()
    return time.perf_counter() - start


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", default="240x427")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    quiet = lambda message: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "data", videos=6, frames=args.frames, size=(height, width), seed=0)
        names = ("a", "b", "c")
        pipeline = validate(
            {
                "data": {"root": str(tmp / "data"), "split": "val"},
                "models": [{"name": n, "weights": str(make_model(tmp / n, seed))} for seed, n in enumerate(names, 1)],
                "ensemble": {"type": "weighted", "args": {"weights": dict.fromkeys(names, 1.0)}},
                "runtime": {"progress": False},
                "output": {"overlays": 0},
            },
            "bench",
        )
        cached = plan_search(pipeline, GRID, "miou", tmp / "cache", CacheSettings(), quiet)
        uncached = plan_search(pipeline, GRID, "miou", None, CacheSettings(), quiet)
        found = search(cached, tmp / "warm", log=quiet)  # fills the cache
        frames = sum(len(cached.dataset.frames(v)) for v in cached.videos)
        contested = __import__("json").loads((tmp / "warm" / "search.json").read_text())["contested_pixels"]

        searches, passes, runs, cold = [], [], [], []
        for _ in range(args.repeats):
            passes.append(evaluation_pass(cached))
            searches.append(timed(lambda: search(cached, tmp / "again", log=quiet)))
            shutil.rmtree(tmp / "run", ignore_errors=True)
            runs.append(timed(lambda: run_pipeline(pipeline, tmp / "run", log=quiet)))
            cold.append(timed(lambda: search(uncached, tmp / "cold", log=quiet)))
        print(
            f"{frames} frames of {height}x{width}, 3 models, {len(found['points'])} points, "
            f"contested pixels {100 * contested:.1f}%, best of {args.repeats}"
        )
        print(
            f"(a) search from the fp16 cache {min(searches):.2f} s, one evaluation pass {min(passes):.2f} s: "
            f"ratio {min(searches) / min(passes):.2f} (target <= 2.0)"
        )
        print(
            f"(b) search without cache {min(cold):.2f} s, zoo run {min(runs):.2f} s: "
            f"ratio {min(cold) / min(runs):.2f} (target <= 1.15)"
        )


if __name__ == "__main__":
    main()
