"""Throughput of the streaming evaluator against torchmetrics' MulticlassJaccardIndex.

Frames are 480x853 with 124 classes: blocky regions that pan over time (so mVC windows are
non-trivial), 5% ignored ground truth and 10% prediction noise. Each side is timed over the
same frames in the same process; the best of ``--repeats`` passes is reported.
torch runs single-threaded by default: on a small machine torchmetrics is fastest that
way (its multi-threaded reductions slow down badly when other processes use the cores);
our update is plain numpy and does not use torch threads.

    python benchmarks/bench_eval.py [--frames 60] [--repeats 3] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from zoo_core.evaluation.evaluator import StreamingEvaluator
from zoo_core.evaluation.metrics import check_prediction, frame_confusion

NUM_CLASSES = 124
HEIGHT, WIDTH = 480, 853


def make_frames(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, ground truth) pairs of uint8 train ids."""
    rng = np.random.default_rng(seed)
    block = 40
    scene = rng.integers(0, NUM_CLASSES, size=(HEIGHT // block + 2, WIDTH // block + count // 4 + 3)).astype(np.uint8)
    scene = np.repeat(np.repeat(scene, block, axis=0), block, axis=1)
    frames = []
    for t in range(count):
        shift = 4 * t  # camera pan: a few pixels per frame
        gt = scene[:HEIGHT, shift : shift + WIDTH].copy()
        pred = gt.copy()
        noisy = rng.random(gt.shape) < 0.10
        pred[noisy] = rng.integers(0, NUM_CLASSES, size=int(noisy.sum()), dtype=np.uint8)
        gt[rng.random(gt.shape) < 0.05] = 255
        frames.append((pred, gt))
    return frames


def best_seconds(run, repeats: int) -> float:
    run()  # warm-up: allocations, lazy imports
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    frames = make_frames(args.frames)
    tensors = [(torch.from_numpy(pred).long()[None], torch.from_numpy(gt).long()[None]) for pred, gt in frames]

    def ours_full() -> StreamingEvaluator:
        evaluator = StreamingEvaluator(NUM_CLASSES, windows=(8, 16))
        evaluator.start_video("bench")
        for pred, gt in frames:
            evaluator.update(pred, gt)
        evaluator.end_video()
        return evaluator

    def ours_confusion_only() -> np.ndarray:
        matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        for pred, gt in frames:
            matrix += frame_confusion(check_prediction(pred, gt, NUM_CLASSES), gt, NUM_CLASSES)
        return matrix

    def torchmetrics_miou() -> MulticlassJaccardIndex:
        metric = MulticlassJaccardIndex(num_classes=NUM_CLASSES, ignore_index=255)
        for pred, gt in tensors:
            metric.update(pred, gt)
        return metric

    names = [str(c) for c in range(NUM_CLASSES)]
    evaluator = ours_full()
    result = evaluator.result(names)
    reference = float(torchmetrics_miou().compute())
    machine = platform.processor() or platform.machine()
    print(
        f"{args.frames} frames {HEIGHT}x{WIDTH}, {NUM_CLASSES} classes; {machine}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} (threads: {torch.get_num_threads()}), numpy {np.__version__}"
    )
    # torchmetrics averages over classes present in the ground truth *or* the prediction,
    # the official metric over classes present in the ground truth only.
    print(
        f"mIoU ours {100 * result['miou']:.2f}, torchmetrics {100 * reference:.2f} (averaged over "
        f"{int((evaluator.confusion_matrix.sum(1) > 0).sum())} vs {NUM_CLASSES} classes); "
        f"mVC8 {100 * result['mvc8']:.2f}, mVC16 {100 * result['mvc16']:.2f}"
    )

    full, confusion_only, baseline = (
        "ours: confusion matrix + mVC8 + mVC16",
        "ours: confusion matrix only",
        "torchmetrics MulticlassJaccardIndex",
    )
    seconds = {
        full: best_seconds(ours_full, args.repeats),
        confusion_only: best_seconds(ours_confusion_only, args.repeats),
        baseline: best_seconds(torchmetrics_miou, args.repeats),
    }
    for name, value in seconds.items():
        print(f"{name:<40}{args.frames / value:9.1f} frames/s  ({1000 * value / args.frames:6.2f} ms/frame)")
    print(f"speed-up, full update vs torchmetrics:           {seconds[baseline] / seconds[full]:.1f}x")
    print(f"speed-up, confusion matrix only vs torchmetrics: {seconds[baseline] / seconds[confusion_only]:.1f}x")


if __name__ == "__main__":
    main()
