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
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from ..errors import DataError, describe_validation_error
from ..fileio import atomic_write_text
from .vspw import VSPWDataset

COUNT_FIELDS = ("pixel_counts", "frame_counts", "video_counts")
Count = Annotated[int, Field(ge=0, lt=2**63)]  # stored as int64


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


class ClassStats(BaseModel):
    """The fields of ``stats.json`` that the losses read; strict JSON types (a count is an integer, not "3")."""

    model_config = ConfigDict(extra="allow", strict=True)  # root, split, totals: informative

    num_classes: int = Field(gt=0)
    class_names: list[str]
    pixel_counts: list[Count]
    frame_counts: list[Count]
    video_counts: list[Count]
    priors: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]
    labelled_pixels: Count


def read_stats(path: str | os.PathLike) -> dict[str, Any]:
    """The statistics saved by ``zoo data stats``, checked; a DataError naming the file and the field otherwise.

    ``pixel_counts``, ``frame_counts`` and ``video_counts`` come back as int64 arrays and
    ``priors`` as a float64 array, each of ``num_classes`` entries.
    """
    path = Path(path)
    redo = "write it with 'zoo data stats ROOT --split train -o FILE'"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"class statistics {path} do not exist; {redo}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"class statistics {path} are not readable JSON ({exc}); {redo}") from None
    try:
        stats = ClassStats.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(line.strip() for line in describe_validation_error(exc, "", ClassStats).splitlines())
        raise DataError(f"class statistics {path}: {problems}; {redo}") from None
    c = stats.num_classes
    for key in ("class_names", *COUNT_FIELDS, "priors"):
        if len(getattr(stats, key)) != c:
            raise DataError(
                f"class statistics {path}: '{key}' has {len(getattr(stats, key))} entries but num_classes "
                f"is {c}; {redo}"
            )
    if sum(stats.pixel_counts) == 0:
        raise DataError(f"class statistics {path}: every class has 0 pixels; {redo} on a split with annotated masks")
    result = stats.model_dump()
    result.update({key: np.array(getattr(stats, key), dtype=np.int64) for key in COUNT_FIELDS})
    result["priors"] = np.array(stats.priors, dtype=np.float64)
    return result
