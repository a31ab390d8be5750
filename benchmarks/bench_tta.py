"""TTA cost: `multiscale-flip` against the same six views predicted one by one, and batched flips.

    python benchmarks/bench_tta.py [--size 480x853] [--repeats 5] [--threads N]

The benchmark model (ResNet-18 + FCN/OCR, 124 classes, random weights) on one frame:

- separate: the six views of `multiscale-flip` (scales 0.5, 1, 1.5, each with its mirror), each
  predicted on its own with `model.predict(view)`, at the view's size;
- multiscale-flip: the policy, which asks for every view's probabilities at the frame's size
  (interpolated once from the model's output) and keeps a running sum. Target: <= 0.9 x separate;
- twice-resized: what the policy did before (each view's probabilities at the view's size, then
  resized again to the frame's), for reference;
- flip pairs: `flip` and `multiscale-flip` with `batch_flips: true` (one batch of 2) against
  `false` (two calls), which is what `auto` chooses between by device.

The variants run in turn inside every repetition (same load for all); the figures are medians
of wall time and of this process's CPU time (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import BENCH_MODEL

from zoo_core.components.tta import FlipTTA, MultiScaleFlipTTA
from zoo_core.model_dir import build_segmentor

SCALES = (0.5, 1.0, 1.5)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _view_sizes(height: int, width: int) -> list[tuple[int, int]]:
    return [(max(1, round(height * s)), max(1, round(width * s))) for s in SCALES]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="480x853")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = map(int, args.size.split("x"))
    torch.manual_seed(0)
    model = build_segmentor(BENCH_MODEL).eval()
    images = torch.randn(1, 3, height, width)
    views = [_resize(images, size) for size in _view_sizes(height, width)]

    def separate() -> None:
        for view in views:
            model.predict(view)
            model.predict(view.flip(-1))

    def twice_resized() -> None:
        total = None
        for view in views:
            probs = model.predict(view) + model.predict(view.flip(-1)).flip(-1)
            probs = _resize(probs, (height, width))
            total = probs if total is None else total + probs
        total / 6

    multiscale = MultiScaleFlipTTA(SCALES, flip=True, batch_flips=False)
    multiscale_batched = MultiScaleFlipTTA(SCALES, flip=True, batch_flips=True)
    flip, flip_batched = FlipTTA(batch_flips=False), FlipTTA(batch_flips=True)
    variants: dict[str, Callable[[], object]] = {
        "separate": separate,
        "multiscale-flip": lambda: multiscale(model.predict, images),
        "twice-resized": twice_resized,
        "flip sequential": lambda: flip(model.predict, images),
        "flip batched": lambda: flip_batched(model.predict, images),
        "multiscale-flip batched": lambda: multiscale_batched(model.predict, images),
    }
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for fn in variants.values():  # warm-up: allocator and kernels, outside the timings
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)

    print(f"frame {height}x{width}, 124 classes, torch threads {torch.get_num_threads()}, {args.repeats} repeats")
    print(f"{'':>24}  wall s (median, min)   CPU s of this process (median)")
    for name in variants:
        print(
            f"{name:>24}: {statistics.median(wall[name]):7.3f} {min(wall[name]):7.3f}"
            f"   {statistics.median(cpu[name]):7.3f}"
        )
    for label, a, b, note in (
        ("multiscale-flip / separate views", "multiscale-flip", "separate", " (target <= 0.9)"),
        ("twice-resized / separate views", "twice-resized", "separate", " (the policy before)"),
        ("flip batched / sequential", "flip batched", "flip sequential", ""),
        ("multiscale-flip batched / sequential", "multiscale-flip batched", "multiscale-flip", ""),
    ):
        by_wall = statistics.median(wall[a]) / statistics.median(wall[b])
        by_cpu = statistics.median(cpu[a]) / statistics.median(cpu[b])
        print(f"ratio {label}: {by_wall:.3f} wall, {by_cpu:.3f} CPU{note}")


if __name__ == "__main__":
    main()
