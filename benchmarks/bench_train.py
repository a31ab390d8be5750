"""`zoo train` iterations/s against a bare PyTorch loop on the same model and batch size.

    python benchmarks/bench_train.py [--iters 20] [--size 256x320] [--crop 256] [--batch 4]

The bare loop trains the benchmark model (ResNet-18 + FCN + OCR, `_common.BENCH_MODEL`)
with AdamW on one batch of tensors already in memory: forward, the two heads' weighted
cross-entropy, backward, step. `zoo train` does the same work plus everything a real run
needs: reading and decoding the JPEG frames and label PNGs, the report's augmentation,
per-micro-batch reseeding, the learning-rate schedule, the finiteness check and the log.
Both skip their first iterations (allocator warm-up); the zoo figure comes from the
timestamps in its train_log.jsonl. Target: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from _common import BENCH_MODEL

from zoo_core.components.losses import CrossEntropyLoss
from zoo_core.data.synth import synthesize
from zoo_core.engine.trainer import train
from zoo_core.model_dir import build_segmentor
from zoo_core.pipeline.schema import validate

WARMUP = 3


def bare_loop(iters: int, batch: int, crop: int) -> float:
    """Iterations per second of the plain loop, after WARMUP iterations."""
    torch.manual_seed(0)
    model = build_segmentor(BENCH_MODEL).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = CrossEntropyLoss()
    images = torch.randn(batch, 3, crop, crop)
    targets = torch.randint(0, 124, (batch, crop, crop))
    for i in range(WARMUP + iters):
        if i == WARMUP:
            start = time.perf_counter()
        outputs = model(images)
        loss = sum(head.loss_weight * loss_fn(out, targets) for head, out in zip(model.heads, outputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    return iters / (time.perf_counter() - start)


def zoo_loop(root: Path, out: Path, iters: int, batch: int, crop: int) -> float:
    pipeline = validate(
        {
            "data": {"root": str(root)},
            "model": BENCH_MODEL,
            "train": {
                "max_iters": WARMUP + iters,
                "batch_size": batch,
                "lr": 1e-4,
                "log_every": 1,
                "checkpoint_every": 0,
                "transforms": [
                    {"type": "multiscale", "alpha": [1.0, 1.5]},
                    {"type": "random-crop", "size": [crop, crop]},
                    {"type": "flip"},
                    {"type": "photometric"},
                ],
            },
            "runtime": {"progress": False},
        },
        "bench",
    )
    train(pipeline, out, log=lambda message: None)
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    seconds = {r["iter"]: r["seconds"] for r in records}
    return iters / (seconds[WARMUP + iters] - seconds[WARMUP])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--size", default="256x320", help="frame size of the synthetic data, HEIGHTxWIDTH")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "data", videos=6, frames=12, size=(height, width), seed=0)
        bare = bare_loop(args.iters, args.batch, args.crop)
        zoo = zoo_loop(tmp / "data", tmp / "run", args.iters, args.batch, args.crop)
    print(
        f"batch {args.batch} x {args.crop}x{args.crop} crops of {height}x{width} frames, {args.iters} timed "
        f"iterations; {platform.machine()}, torch {torch.__version__} (threads: {torch.get_num_threads()})"
    )
    print(f"bare loop (tensors in memory)   {bare:7.3f} it/s")
    print(f"zoo train (data + augmentation) {zoo:7.3f} it/s")
    print(f"ratio zoo / bare: {zoo / bare:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
