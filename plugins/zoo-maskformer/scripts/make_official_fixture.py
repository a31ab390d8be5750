"""Make tests/fixtures/official-*: a small random model of the official MaskFormer code, and its scores.

What it needs: detectron2 (0.6) and a checkout of https://github.com/facebookresearch/MaskFormer
(CC BY-NC 4.0; it is imported from the path given, never copied here). The fixture in this
repository was made from commit da3e60d85fdeedcb31476b5edd7d328826ce56cc with detectron2 0.6,
torch 2.14.1 on CPU:

    python scripts/make_official_fixture.py --official /path/to/MaskFormer --out tests/fixtures

It builds the official ``MaskFormer`` meta-architecture with its ``D2SwinTransformer``
backbone at tiny sizes (Swin embed 4, heads 1,1,2,2, depths 2,2,2,2, window 5, MLP ratio 2; 8 queries, 2 decoder
layers; 5 classes), adds noise to every parameter (so that no weight keeps its initial
1 or 0 and a mix-up of any two shows), and writes:

- ``official-tiny.pkl``: ``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}``,
  the layout of the official ``model_final_*.pkl`` checkpoints;
- ``official-tiny-scores.npz``: ``image`` (3, 45, 70) float32 in 0..255 RGB, ``sem_seg``
  (5, 45, 70): the official inference in eval mode (``SIZE_DIVISIBILITY`` 32, so the image
  is padded to 64 x 96; ``sem_seg_postprocess`` then ``semantic_inference``), and
  ``pixel_mean``/``pixel_std``.

Runtime shims (applied here, not in the official files): a stand-in ``cv2`` module when
OpenCV is not installed (the official package imports its data mappers, which import cv2;
no image is decoded here).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

CONFIG = {
    "MODEL.META_ARCHITECTURE": "MaskFormer",
    "MODEL.BACKBONE.NAME": "D2SwinTransformer",
    "MODEL.SWIN.EMBED_DIM": 4,
    "MODEL.SWIN.DEPTHS": [2, 2, 2, 2],
    "MODEL.SWIN.NUM_HEADS": [1, 1, 2, 2],
    "MODEL.SWIN.WINDOW_SIZE": 5,
    "MODEL.SWIN.MLP_RATIO": 2.0,
    "MODEL.SWIN.DROP_PATH_RATE": 0.0,
    "MODEL.SEM_SEG_HEAD.NAME": "MaskFormerHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 5,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 16,
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.MASK_FORMER.HIDDEN_DIM": 16,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 8,
    "MODEL.MASK_FORMER.NHEADS": 8,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 32,
    "MODEL.MASK_FORMER.DEC_LAYERS": 2,
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 32,
    "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530],
    "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
    "MODEL.DEVICE": "cpu",
    "DATASETS.TRAIN": ("zoo_fixture",),
    "DATASETS.TEST": ("zoo_fixture",),
}
IMAGE_SIZE = (45, 70)  # not a multiple of 32: the official inference pads to 64 x 96


def import_official(path: Path):
    """The official package ``mask_former`` from ``path``, with the runtime shims."""
    try:
        import cv2  # noqa: F401
    except ImportError:  # detectron2 reads cv2.__version__ and calls cv2.ocl / cv2.setNumThreads at import
        cv2 = types.ModuleType("cv2")
        cv2.__version__ = "4.0.0"
        cv2.ocl = types.SimpleNamespace(setUseOpenCL=lambda flag: None)
        cv2.setNumThreads = lambda n: None
        sys.modules["cv2"] = cv2
    sys.path.insert(0, str(path))
    import mask_former

    return mask_former


def build_official_model(mask_former):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    mask_former.add_mask_former_config(cfg)
    for key, value in CONFIG.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = getattr(node, parent)
        setattr(node, leaf, value)
    cfg.freeze()
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    model.eval()  # (the official Swin's train() returns None: do not chain)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of facebookresearch/MaskFormer")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    args = parser.parse_args()
    model = build_official_model(import_official(args.official))

    generator = torch.Generator().manual_seed(1)
    image = torch.rand((3, *IMAGE_SIZE), generator=generator) * 255
    with torch.no_grad():
        sem_seg = model([{"image": image, "height": IMAGE_SIZE[0], "width": IMAGE_SIZE[1]}])[0]["sem_seg"]

    args.out.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    checkpoint = {"model": state, "__author__": "zoo-maskformer fixture", "matching_heuristics": True}
    with open(args.out / "official-tiny.pkl", "wb") as f:
        pickle.dump(checkpoint, f, protocol=4)
    np.savez(
        args.out / "official-tiny-scores.npz",
        image=image.numpy(),
        sem_seg=sem_seg.numpy(),
        pixel_mean=np.asarray(CONFIG["MODEL.PIXEL_MEAN"], dtype=np.float32),
        pixel_std=np.asarray(CONFIG["MODEL.PIXEL_STD"], dtype=np.float32),
    )
    print(
        f"wrote {args.out}/official-tiny.pkl ({len(state)} arrays) and official-tiny-scores.npz {tuple(sem_seg.shape)}"
    )


if __name__ == "__main__":
    main()
