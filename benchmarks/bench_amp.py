"""Which precision ``runtime.amp: auto`` picks on this CPU, and why: bf16 against fp32.

    python benchmarks/bench_amp.py [--size 480x853] [--reps 2] [--presets swin-l volo-d5]
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_amp.py --presets    # the AVX2-only path, matmul only

First the decision (the CPU's capability, the dtype ``auto`` chooses), then a 512x512
matmul in fp32 and bf16 on one thread (GFLOP/s, best of 5): without native bf16 oneDNN
emulates it and bf16 is far slower. Then the forward time of each full-size preset in fp32
and under bf16 autocast at 480x853: randomly initialised weights (the time does not depend
on their values), batch 1, eval mode, ``torch.inference_mode``; one untimed warm-up
forward, then the best of ``--reps``. Presets come from the installed plugins
(zoo-swin-ocr, zoo-volo-unet-ocr); a preset whose plugin is missing is reported and
skipped; ``--presets`` with no name skips them all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time

import torch

from zoo_core.model_dir import build_segmentor
from zoo_core.runtime import autocast, bf16_support, resolve_amp

PRESETS = {
    "swin-l": "zoo_swin_ocr.presets",
    "swin-l-deep": "zoo_swin_ocr.presets",
    "volo-d5": "zoo_volo_unet_ocr.presets",
}


def forward_seconds(model: torch.nn.Module, images: torch.Tensor, amp: str, reps: int) -> float:
    best = float("inf")
    with torch.inference_mode():
        for i in range(reps + 1):
            start = time.perf_counter()
            with autocast(images.device, amp):
                model.predict(images)
            if i:  # the first call is the warm-up
                best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(dtype: torch.dtype, n: int = 512, reps: int = 5) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="480x853")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    cpu = torch.device("cpu")
    print(
        f"this {bf16_support(cpu).device}: native bf16 {'yes' if bf16_support(cpu).native else 'no'}; "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}"
    )
    chosen = resolve_amp("auto", cpu, log=print)
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(
        f"matmul 512x512, 1 thread: fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s ({bf16 / fp32:.2f}x); "
        f"auto runs {'bf16' if chosen == 'bf16' else 'fp32'}"
    )
    if not args.presets:
        return
    print(
        f"batch 1 x {height}x{width}, best of {args.reps} after a warm-up; {platform.machine()}, "
        f"torch {torch.__version__} (threads: {torch.get_num_threads()})"
    )
    print(f"{'preset':<14}{'params':>10}{'fp32 s':>10}{'bf16 s':>10}{'speed-up':>10}  auto")
    for name in args.presets:
        try:
            presets = importlib.import_module(PRESETS[name])
        except ImportError as exc:
            print(f"{name:<14}skipped: {exc}")
            continue
        torch.manual_seed(0)
        model = build_segmentor(presets.model_config(name)).eval()
        params = sum(p.numel() for p in model.parameters())
        images = torch.randn(1, 3, height, width)
        fp32 = forward_seconds(model, images, "none", args.reps)
        bf16 = forward_seconds(model, images, "bf16", args.reps)
        print(
            f"{name:<14}{params / 1e6:>9.1f}M{fp32:>10.2f}{bf16:>10.2f}{fp32 / bf16:>9.2f}x  "
            f"{'bf16' if chosen == 'bf16' else 'fp32'}"
        )
        del model


if __name__ == "__main__":
    main()
