"""`zoo run` frames/s against a bare loop calling the same model on the same frames.

    python benchmarks/bench_run.py [--frames 24] [--size 480x853]

The bare loop gets its frames already decoded and normalised in memory and only calls
`model.predict` + argmax; `zoo run` also reads and decodes the JPEGs, writes palette PNGs
and updates the confusion matrix and both mVC windows. The ratio compares the streaming
rate `zoo run` reports (first frame read to last PNG written) with the bare loop's; the
whole call, with plugin discovery, model loading and the report, is printed beside it.
Target: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch
from _common import make_model_dir, pipeline_dict

from zoo_core.data.synth import synthesize
from zoo_core.data.vspw import VSPWDataset, normalize
from zoo_core.model_dir import load_model_dir
from zoo_core.pipeline.run import run_pipeline
from zoo_core.pipeline.schema import validate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="480x853")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "data", videos=4, frames=args.frames, size=(height, width), seed=0)
        weights = make_model_dir(tmp / "model")
        pipeline = validate(pipeline_dict(tmp / "data", weights), "bench")
        dataset = VSPWDataset(tmp / "data", "val")
        video = dataset.videos[0]
        pipeline.data.videos = [video]

        model, _ = load_model_dir(weights)
        model.eval()
        images = [normalize(f.image).unsqueeze(0) for f in dataset.iter_video(video)]
        # Both loops pay their first (slower) frame; model loading is outside both timings.
        start = time.perf_counter()
        with torch.inference_mode():
            for image in images:
                model.predict(image).argmax(1).to(torch.uint8)
        bare = len(images) / (time.perf_counter() - start)

        messages: list[str] = []
        start = time.perf_counter()
        run_pipeline(pipeline, tmp / "run", log=messages.append)
        whole = len(images) / (time.perf_counter() - start)
        # zoo run's own figure: from its first frame read to its last PNG written
        streamed = next(m for m in messages if m.startswith("predicted "))
        zoo = float(re.search(r"\(([0-9.]+) frames/s\)", streamed).group(1))

    print(f"frames: {len(images)} at {height}x{width}, torch threads: {torch.get_num_threads()}")
    print(f"bare loop: {bare:.2f} frames/s")
    print(f"zoo run:   {zoo:.2f} frames/s streaming (JPEG reading, prediction, PNG writing, mIoU + mVC8/16)")
    print(f"zoo run:   {whole:.2f} frames/s whole call (also plugin discovery, model loading, report)")
    print(f"ratio zoo run / bare loop: {zoo / bare:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
