"""Peak memory of `zoo run` on a 240-frame video against a 30-frame one.

    python benchmarks/bench_memory.py [--size 480x853]

Each run is its own process; the figure is its peak resident set size. Streaming keeps
memory flat in the number of frames. Target: ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from _common import make_model_dir, pipeline_dict

from zoo_core.data.synth import synthesize

CHILD = """
import resource, sys
from pathlib import Path
from zoo_core.pipeline.run import run_pipeline
from zoo_core.pipeline.schema import load_pipeline
run_pipeline(load_pipeline(sys.argv[1]), Path(sys.argv[2]), log=lambda m: None)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def peak_rss_mib(root: Path, weights: Path, out: Path) -> float:
    path = out.with_suffix(".yaml")
    pipeline = pipeline_dict(root, weights)
    path.write_text(yaml.safe_dump(pipeline))
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(out)], capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="480x853")
    args = parser.parse_args()
    size = tuple(map(int, args.size.split("x")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = make_model_dir(tmp / "model")
        figures = {}
        for frames in (30, 240):
            root = tmp / f"data{frames}"
            synthesize(root, videos=2, frames=frames, size=size, seed=0, val_fraction=0.5)  # one val video
            figures[frames] = peak_rss_mib(root, weights, tmp / f"run{frames}")
    print(json.dumps({f"peak_rss_mib_{k}_frames": round(v, 1) for k, v in figures.items()}))
    print(f"ratio 240 / 30 frames: {figures[240] / figures[30]:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
