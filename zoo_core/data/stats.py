"""Class statistics of a split, ``stats.json``: the input of the class-balancing losses and of logit adjustment.

::

    {"root": "...", "split": "train", "num_classes": 124, "class_names": [...],
     "pixel_counts": [...],   # labelled pixels of each class
     "frame_counts": [...],   # annotated frames in which the class appears
     "video_counts": [...],   # videos in which the class appears
     "priors": [...],         # pixel_counts / labelled_pixels
     "total_pixels": int, "labelled_pixels": int, "videos": int, "frames": int}

Counting streams: one mask at a time, a ``bincount`` each, so memory does not depend on
the size of the split. Only the masks are read (the frames' images are not decoded).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from tqdm import tqdm

from ..class_stats import COUNT_FIELDS, ClassStats, read_stats  # noqa: F401 (the reader, re-exported)
from ..errors import DataError
from ..fileio import atomic_write_text
from .vspw import VSPWDataset


def compute_stats(root: str | os.PathLike, split: str = "train", progress: bool = True) -> dict[str, Any]:
    """Per-class pixel, frame and video counts and priors of ``split`` (see the module docstring).

    Every video of the split must have masks; a corrupt mask raises the reader's DataError.
    """
    dataset = VSPWDataset(root, split)
    unannotated = [video for video in dataset.videos if dataset.frames(video)[0].mask_path is None]
    if unannotated:
        raise DataError(
            f"split {split!r} of {dataset.root}: videos without masks have no class statistics: "
            f"{', '.join(unannotated[:5])}{' ...' if len(unannotated) > 5 else ''}; "
            "count a split with a mask/ folder in every video (e.g. --split train)"
        )
    c = len(dataset.class_names)
    pixels = np.zeros(c, dtype=np.int64)
    frames = np.zeros(c, dtype=np.int64)
    videos = np.zeros(c, dtype=np.int64)
    total = n_frames = 0
    bar = tqdm(
        total=sum(len(dataset.frames(v)) for v in dataset.videos),
        desc=f"stats {split}",
        unit="frame",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for video in dataset.videos:
            in_video = np.zeros(c, dtype=bool)
            for ref in dataset.frames(video):
                mask = dataset.load_mask(ref)
                counts = np.bincount(mask.ravel(), minlength=256)[:c]  # train ids; 255 (ignore) falls outside
                pixels += counts
                frames += counts > 0
                in_video |= counts > 0
                total += mask.size
                n_frames += 1
                bar.update()
            videos += in_video
    finally:
        bar.close()
    labelled = int(pixels.sum())
    if labelled == 0:
        raise DataError(
            f"split {split!r} of {dataset.root} has no labelled pixel in its {n_frames} masks (all "
            "'others' or void); class statistics need annotated masks"
        )
    return {
        "root": str(dataset.root),
        "split": split,
        "num_classes": c,
        "class_names": list(dataset.class_names),
        "pixel_counts": pixels.tolist(),
        "frame_counts": frames.tolist(),
        "video_counts": videos.tolist(),
        "priors": (pixels / labelled).tolist(),
        "total_pixels": total,
        "labelled_pixels": labelled,
        "videos": len(dataset.videos),
        "frames": n_frames,
    }


def write_stats(path: str | os.PathLike, stats: dict[str, Any]) -> None:
    """Write ``stats`` as JSON atomically, one class list a line."""
    lines = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in stats.items())
    atomic_write_text(path, "{\n" + lines + "\n}\n")
