"""Peak memory of `zoo run` on a 240-frame video against a 30-frame one.

    python benchmarks/bench_memory.py [--size 480x853]
    python benchmarks/bench_memory.py --ensemble [--size 240x427] [--threads N]

Each run is its own process; the figure is its peak resident set size. Streaming keeps
memory flat in the number of frames. Target: ratio <= 1.1. ``--ensemble``: three models
(the small ResNet-10t + FCN + OCR of the tests, three seeds: 18 views a frame stay affordable
on a CPU), each with `multiscale-flip` (3 scales x 2 flips: six views), fused by `mean`; each
view's 124-class probabilities are full-frame maps, as with any backbone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from _common import make_model_dir, pipeline_dict

from zoo_core.data.synth import synthesize
from zoo_core.model_dir import build_segmentor, save_model_dir
from zoo_core.testing import TINY_MODEL

ENSEMBLE_TTA = {"type": "multiscale-flip", "args": {"scales": [0.75, 1.0, 1.25], "flip": True}}

CHILD = """
import resource, sys
from pathlib import Path
from zoo_core.pipeline.run import run_pipeline
from zoo_core.pipeline.schema import load_pipeline
run_pipeline(load_pipeline(sys.argv[1]), Path(sys.argv[2]), log=lambda m: None)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def ensemble_pipeline(root: Path, weights: list[Path]) -> dict:
    pipeline = pipeline_dict(root, weights[0])
    pipeline["models"] = [{"name": w.name, "weights": str(w), "tta": ENSEMBLE_TTA} for w in weights]
    pipeline["ensemble"] = {"type": "mean"}
    pipeline["runtime"]["amp"] = "none"  # fp32: the probabilities' memory at its largest
    return pipeline


def seeded_model_dir(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_model_dir(build_segmentor(TINY_MODEL).eval(), TINY_MODEL, path, extra={"class_names": None})
    return path


def peak_rss_mib(pipeline: dict, out: Path) -> float:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(pipeline))
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(out)], capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", help="HxW of the frames (default 480x853; with --ensemble 240x427)")
    parser.add_argument("--ensemble", action="store_true", help="3 models x 6 views (multiscale-flip), mean")
    parser.add_argument("--threads", type=int, help="torch threads of each run (runtime.threads)")
    args = parser.parse_args()
    size = tuple(map(int, (args.size or ("240x427" if args.ensemble else "480x853")).split("x")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.ensemble:
            weights = [seeded_model_dir(tmp / f"model{seed}", seed) for seed in range(3)]
        else:
            weights = make_model_dir(tmp / "model")
        figures = {}
        for frames in (30, 240):
            root = tmp / f"data{frames}"
            synthesize(root, videos=2, frames=frames, size=size, seed=0, val_fraction=0.5)  # one val video
            pipeline = ensemble_pipeline(root, weights) if args.ensemble else pipeline_dict(root, weights)
            if args.threads:
                pipeline["runtime"]["threads"] = args.threads
            figures[frames] = peak_rss_mib(pipeline, tmp / f"run{frames}")
    what = "3 models (ResNet-10t) x multiscale-flip (6 views), mean" if args.ensemble else "1 model, identity"
    print(f"{what}, {size[0]}x{size[1]} frames")
    print(json.dumps({f"peak_rss_mib_{k}_frames": round(v, 1) for k, v in figures.items()}))
    print(f"ratio 240 / 30 frames: {figures[240] / figures[30]:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
