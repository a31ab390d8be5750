"""Forward time of the zoo MaskFormer against transformers' MaskFormer of the same sizes and weights.

    python plugins/zoo-maskformer/benchmarks/bench_forward_hf.py [--reps 3] [--models mini swin-l]

For each size, a randomly initialised transformers ``MaskFormerForInstanceSegmentation``
(Swin backbone) is built and converted in memory with ``zoo maskformer import-hf``'s
converter, so both models hold the same weights (the script first checks that their
semantic scores agree). Then, alternating between the two, the best of ``--reps`` timed
forwards after one warm-up each (ten times as many for ``mini``, whose forward takes
milliseconds and is the more exposed to a shared machine's noise), batch 1, eval mode,
``torch.inference_mode``:

- ``mini``: the sizes of the ``maskformer-mini`` preset at 64x96, fp32;
- ``swin-l``: the official ADE20K Swin-L config's sizes (``maskformer-swin-l``, 150 classes)
  at 480x853, under bf16 autocast when the CPU has native bf16 (else fp32; the line says which).

The forward is the model's own: transformers' ``model(pixel_values)`` (class and mask
logits of the last decoder layer) against the zoo segmentor's ``model(images)`` (the
same, plus every earlier decoder layer's pair, which the zoo head always returns). Target:
zoo / transformers at most 1.0.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from zoo_maskformer.convert_hf import convert_state_dict

from zoo_core.model_dir import build_segmentor

SIZES = {
    "mini": {
        "size": (64, 96),
        "classes": 124,
        "swin": {"embed_dim": 32, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 4},
        "head": {"fpn": 32, "mask": 32, "hidden": 32, "queries": 8, "heads": 2, "ffn": 64, "layers": 2},
    },
    "swin-l": {
        "size": (480, 853),
        "classes": 150,
        "swin": {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48], "window_size": 12},
        "head": {"fpn": 256, "mask": 256, "hidden": 256, "queries": 100, "heads": 8, "ffn": 2048, "layers": 6},
    },
}


def build_pair(name: str):
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, MaskFormerSwinConfig

    spec = SIZES[name]
    head = spec["head"]
    backbone = MaskFormerSwinConfig(
        **spec["swin"], drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    decoder = {
        "model_type": "detr",
        "d_model": head["hidden"],
        "decoder_layers": head["layers"],
        "decoder_attention_heads": head["heads"],
        "decoder_ffn_dim": head["ffn"],
        "encoder_layers": 0,
        "num_queries": head["queries"],
        "dropout": 0.1,
    }
    config = MaskFormerConfig(
        backbone_config=backbone,
        decoder_config=decoder,
        num_labels=spec["classes"],
        num_queries=head["queries"],
        fpn_feature_size=head["fpn"],
        mask_feature_size=head["mask"],
    )
    torch.manual_seed(0)
    hf = MaskFormerForInstanceSegmentation(config).eval()
    state, model_config, _ = convert_state_dict(config.to_dict(), hf.state_dict(), 0, name)
    zoo = build_segmentor(model_config).eval()
    zoo.load_state_dict(state, strict=True)
    return hf, zoo


def max_score_difference(hf, zoo, images: torch.Tensor) -> float:
    with torch.inference_mode():
        out = hf(pixel_values=images)
        classes = out.class_queries_logits.softmax(-1)[..., :-1]
        masks = F.interpolate(out.masks_queries_logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        reference = torch.einsum("nqc,nqhw->nchw", classes, masks.sigmoid())
        ours = zoo(images)[-1].to_scores(tuple(images.shape[-2:]))
    return float((reference - ours).abs().max())


def time_forward(fn, images: torch.Tensor, dtype: torch.dtype | None) -> float:
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        start = time.perf_counter()
        fn(images)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    native_bf16 = torch.cpu._is_avx512_bf16_supported()
    print(
        f"{platform.machine()}, native bf16: {'yes' if native_bf16 else 'no'}; torch {torch.__version__} "
        f"(threads: {torch.get_num_threads()}); batch 1, best of {args.reps} after a warm-up, alternating"
    )
    print(f"{'model':<8}{'size':>10}{'precision':>10}{'max |diff|':>12}{'transformers s':>16}{'zoo s':>10}{'ratio':>8}")
    for name in args.models:
        hf, zoo = build_pair(name)
        height, width = SIZES[name]["size"]
        images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1))
        diff = max_score_difference(hf, zoo, images)
        dtype = torch.bfloat16 if name == "swin-l" and native_bf16 else None
        runs = {"transformers": lambda x, m=hf: m(pixel_values=x), "zoo": zoo}
        best = {key: float("inf") for key in runs}
        for fn in runs.values():  # warm-up
            time_forward(fn, images, dtype)
        for _ in range(args.reps * (10 if name == "mini" else 1)):
            for key, fn in runs.items():
                best[key] = min(best[key], time_forward(fn, images, dtype))
        precision = "bf16" if dtype else "fp32"
        print(
            f"{name:<8}{f'{height}x{width}':>10}{precision:>10}{diff:>12.1e}{best['transformers']:>16.3f}"
            f"{best['zoo']:>10.3f}{best['zoo'] / best['transformers']:>8.2f}"
        )


if __name__ == "__main__":
    main()
