"""`zoo train` iterations/s of maskformer-mini against a bare PyTorch loop: same model, loss, optimizer, data.

    python plugins/zoo-maskformer/benchmarks/bench_train_step.py [--iters 30] [--batch 4] [--rounds 3] [--workers 0]

The bare loop trains ``model_config("maskformer-mini")`` with the ``maskformer`` loss and
AdamW (the four parameter groups `zoo train` makes) on the frames and label maps of the
synthetic dataset's train split, read once and kept in memory, a batch of them in turn:
forward, loss (Hungarian matching included), backward, step. `zoo train` does the same work
plus what a real run needs: reading and decoding the frames and label PNGs each step, the
crop and flip, per-micro-batch reseeding, the learning-rate schedule, the
finiteness check and the log. Both run with one torch thread and skip their first
iterations (allocator warm-up); the zoo figures come from the timestamps of its
``train_log.jsonl`` (logged every iteration). Iterations are timed in blocks of 5; the two
loops alternate for ``--rounds`` rounds and the ratio compares the median time per iteration
over all blocks (and the fastest quartile), so a burst of load on a shared machine does not
decide it. Target: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from zoo_maskformer import model_config
from zoo_maskformer.loss import MaskFormerLoss

from zoo_core.model_dir import build_segmentor
from zoo_core.testing import run_cli

WARMUP = 3
BLOCK = 5
"""Iterations timed together: the log's timestamps have 10 ms steps, 3% of one iteration."""
NUM_CLASSES = 124
SIZE = (64, 96)


def load_frames(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame of the train split, normalised, with its train-id label map."""
    images, labels = [], []
    for video in (root / "train.txt").read_text().split():
        folder = root / "data" / video
        for frame in sorted((folder / "origin").iterdir()):
            image = np.asarray(Image.open(frame).convert("RGB"), dtype=np.float32) / 255
            images.append(torch.from_numpy((image - 0.45) / 0.225).permute(2, 0, 1))
            raw = np.asarray(Image.open(folder / "mask" / f"{frame.stem}.png")).astype(np.int64)
            # VSPW's raw ids: 0 (others) and 255 are ignored, 1..124 are the train ids 0..123
            labels.append(torch.from_numpy(np.where((raw >= 1) & (raw <= NUM_CLASSES), raw - 1, 255)))
    return torch.stack(images), torch.stack(labels)


def adamw_as_zoo_train(model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW with the four parameter groups `zoo train` makes: backbone / heads x weight decay / none (1-D)."""
    backbone = {id(p) for p in model.backbone.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for param in model.parameters():
        groups.setdefault((id(param) in backbone, param.ndim <= 1), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": 0.0 if no_decay else 0.01} for (_, no_decay), params in groups.items()],
        lr=1e-4,
    )


def bare_loop(root: Path, iters: int, batch: int) -> list[float]:
    """Seconds per iteration of the plain loop, per block of BLOCK iterations after WARMUP."""
    torch.manual_seed(0)
    model = build_segmentor(model_config("maskformer-mini", NUM_CLASSES)).train()
    optimizer = adamw_as_zoo_train(model)
    loss_fn = MaskFormerLoss(NUM_CLASSES)
    frames, labels = load_frames(root)
    times = []
    for i in range(WARMUP + iters):
        if i >= WARMUP and (i - WARMUP) % BLOCK == 0:
            start = time.perf_counter()
        pick = torch.arange(i * batch, (i + 1) * batch) % len(frames)  # the train frames in turn
        outputs = model(frames[pick])
        loss = sum(head.loss_weight * loss_fn(out, labels[pick]) for head, out in zip(model.heads, outputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        if i >= WARMUP and (i - WARMUP) % BLOCK == BLOCK - 1:
            times.append((time.perf_counter() - start) / BLOCK)
    return times


def zoo_loop(root: Path, out: Path, iters: int, batch: int, workers: int) -> list[float]:
    """Seconds per iteration of `zoo train`, per block of BLOCK iterations after WARMUP (from its log's timestamps)."""
    pipeline = {
        "data": {"root": str(root)},
        "model": model_config("maskformer-mini", NUM_CLASSES),
        "train": {
            "max_iters": WARMUP + iters,
            "batch_size": batch,
            "lr": 1e-4,
            "log_every": 1,
            "checkpoint_every": 0,
            "num_workers": workers,
            "loss": {"type": "maskformer"},
            "transforms": [{"type": "random-crop", "size": list(SIZE)}, {"type": "flip"}],
        },
        "runtime": {"device": "cpu", "amp": "none", "threads": 1, "progress": False},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.yaml").write_text(yaml.safe_dump(pipeline))
    result = run_cli("train", str(out.parent / f"{out.name}.yaml"), "--out", str(out))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    seconds = {r["iter"]: r["seconds"] for r in records}
    return [(seconds[i + BLOCK] - seconds[i]) / BLOCK for i in range(WARMUP, WARMUP + iters, BLOCK)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=30, help="timed iterations per round, a multiple of 5")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="train.num_workers of zoo train (0: load in the loop)")
    args = parser.parse_args()
    if args.iters % BLOCK:
        parser.error(f"--iters must be a multiple of {BLOCK}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = run_cli("data", "synth", str(tmp / "data"), "--videos", "6", "--frames", "8", "--seed", "0")
        assert result.exit_code == 0, result.output
        bare, zoo = [], []
        for round_ in range(args.rounds):
            bare += bare_loop(tmp / "data", args.iters, args.batch)
            zoo += zoo_loop(tmp / "data", tmp / f"run{round_}", args.iters, args.batch, args.workers)
    print(
        f"maskformer-mini, batch {args.batch} x {SIZE[0]}x{SIZE[1]} frames, {args.rounds} rounds of {args.iters} "
        f"timed iterations (blocks of {BLOCK}), train.num_workers {args.workers}; {platform.machine()}, "
        f"torch {torch.__version__} (threads: 1)"
    )
    for name, times in (("bare loop (tensors in memory)  ", bare), ("zoo train (data + augmentation)", zoo)):
        print(f"{name} median {1 / median(times):7.3f} it/s, fastest quartile {1 / quantile(times, 0.25):7.3f} it/s")
    print(f"ratio zoo / bare, medians: {median(bare) / median(zoo):.3f}  (target >= 0.95)")
    print(f"ratio zoo / bare, fastest quartiles: {quantile(bare, 0.25) / quantile(zoo, 0.25):.3f}")


def median(times: list[float]) -> float:
    return quantile(times, 0.5)


def quantile(times: list[float], q: float) -> float:
    return float(np.quantile(times, q))


if __name__ == "__main__":
    main()
