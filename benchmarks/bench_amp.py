"""Forward time of each full-size preset in bf16 autocast against fp32, at 480x853 on this CPU.

    python benchmarks/bench_amp.py [--size 480x853] [--reps 2] [--presets swin-l volo-d5]

Randomly initialised weights (the time does not depend on their values), batch 1, eval
mode, ``torch.inference_mode``. Each precision gets one untimed warm-up forward, then the
best of ``--reps``. Presets come from the installed plugins (zoo-swin-ocr,
zoo-volo-unet-ocr); a preset whose plugin is missing is reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import time

import torch

from zoo_core.model_dir import build_segmentor
from zoo_core.runtime import autocast

PRESETS = {"swin-l": "zoo_swin_ocr.presets", "swin-l-deep": "zoo_swin_ocr.presets",
           "volo-d5": "zoo_volo_unet_ocr.presets"}


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="480x853")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    print(f"batch 1 x {height}x{width}, best of {args.reps} after a warm-up; {platform.machine()}, "
          f"torch {torch.__version__} (threads: {torch.get_num_threads()})")
    print(f"{'preset':<14}{'params':>10}{'fp32 s':>10}{'bf16 s':>10}{'speed-up':>10}")
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
        print(f"{name:<14}{params / 1e6:>9.1f}M{fp32:>10.2f}{bf16:>10.2f}{fp32 / bf16:>9.2f}x")
        del model


if __name__ == "__main__":
    main()
