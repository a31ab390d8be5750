"""The streaming evaluator the pipeline feeds frame by frame: official mIoU and mVC."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path
from .consistency import VideoConsistency
from .metrics import check_prediction, frame_confusion, summarize


@dataclass
class VideoStats:
    """One video's contribution to the metrics; saved per video so a run can resume."""

    cm: np.ndarray
    vc_sum: dict[int, float] = field(default_factory=dict)
    vc_count: dict[int, int] = field(default_factory=dict)
    frames: int = 0

    def save(self, path: str | os.PathLike) -> None:
        windows = sorted(self.vc_sum)
        arrays = {
            "cm": np.asarray(self.cm, dtype=np.int64),
            "windows": np.array(windows, dtype=np.int64),
            "vc_sum": np.array([self.vc_sum[c] for c in windows], dtype=np.float64),
            "vc_count": np.array([self.vc_count[c] for c in windows], dtype=np.int64),
            "frames": np.array(self.frames, dtype=np.int64),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            np.savez(file, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VideoStats:
        try:
            # Opened here so the file is closed even when it is not a valid archive.
            with open(path, "rb") as file:
                data = np.load(file, allow_pickle=False)
                cm, windows = data["cm"], data["windows"].tolist()
                vc_sum, vc_count, frames = data["vc_sum"].tolist(), data["vc_count"].tolist(), int(data["frames"])
        except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"{path}: not a readable video statistics file ({exc}); delete it and the video will be evaluated again"
            ) from None
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or not len(vc_sum) == len(vc_count) == len(windows):
            raise DataError(f"{path}: inconsistent video statistics; delete it and the video will be evaluated again")
        return cls(
            cm=cm.astype(np.int64),
            vc_sum=dict(zip(windows, vc_sum)),
            vc_count=dict(zip(windows, vc_count)),
            frames=frames,
        )


class StreamingEvaluator:
    """Official VSPW mIoU and mVC over a stream of videos, one frame at a time.

    Memory is one confusion matrix plus a few HxW uint8 maps for the current video, however
    long the video or the split::

        evaluator = StreamingEvaluator()
        for video in videos:
            evaluator.start_video(video)
            for pred, gt in frames_of(video):
                evaluator.update(pred, gt, source=f"{video}/{frame}")
            evaluator.end_video().save(f"stats/{video}.npz")
        print(evaluator.result(class_names)["miou"])
    """

    def __init__(self, num_classes: int = 124, windows: Sequence[int] = (8, 16)):
        if not 0 < num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255 (uint8 label maps), got {num_classes}")
        self.num_classes = num_classes
        self.windows = VideoConsistency(windows).windows  # validated and sorted
        self.confusion_matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.vc_sum = dict.fromkeys(self.windows, 0.0)
        self.vc_count = dict.fromkeys(self.windows, 0)
        self.evaluated_videos = 0
        self.evaluated_frames = 0
        self._video: str | None = None

    def start_video(self, name: str) -> None:
        if self._video is not None:
            raise RuntimeError(f"start_video({name!r}) before end_video() of {self._video!r}")
        self._video = name
        self._video_cm = np.zeros_like(self.confusion_matrix)
        self._consistency = VideoConsistency(self.windows)
        self._frame_shape: tuple[int, ...] | None = None

    def update(self, pred: np.ndarray, gt: np.ndarray, source: str = "") -> None:
        """Add the video's next frame: ``pred`` train ids, ``gt`` uint8 train ids (255 = ignore)."""
        if self._video is None:
            raise RuntimeError("update() outside start_video() / end_video()")
        source = source or f"video {self._video}, frame {self._consistency.frames + 1}"
        if gt.dtype != np.uint8 or gt.ndim != 2:
            raise ValueError(f"{source}: ground truth must be an HxW uint8 array, got {gt.ndim}-D {gt.dtype}")
        pred = check_prediction(pred, gt, self.num_classes, source)
        if self._frame_shape is None:
            self._frame_shape = gt.shape
        elif gt.shape != self._frame_shape:
            raise DataError(
                f"{source}: frame size {gt.shape[0]}x{gt.shape[1]} differs from the earlier frames "
                f"of video {self._video} ({self._frame_shape[0]}x{self._frame_shape[1]}); all "
                "frames of a video must have one size"
            )
        self._video_cm += frame_confusion(pred, gt, self.num_classes)
        self._consistency.update(pred, gt)

    def end_video(self) -> VideoStats:
        """Close the current video, add it to the totals and return its own statistics."""
        if self._video is None:
            raise RuntimeError("end_video() without start_video()")
        vc_sum, vc_count = self._consistency.finish()
        stats = VideoStats(cm=self._video_cm, vc_sum=vc_sum, vc_count=vc_count, frames=self._consistency.frames)
        self._video = None
        self.add(stats)
        return stats

    def add(self, stats: VideoStats) -> None:
        """Merge a video's statistics computed earlier (for example loaded to resume a run)."""
        if stats.cm.shape != self.confusion_matrix.shape:
            raise DataError(
                f"video statistics for {stats.cm.shape[0]} classes cannot be merged into an "
                f"evaluation of {self.num_classes} classes; delete the saved statistics"
            )
        missing = [c for c in self.windows if c not in stats.vc_sum or c not in stats.vc_count]
        if missing:
            raise DataError(f"video statistics lack the mVC window(s) {missing}; delete the saved statistics")
        self.confusion_matrix += stats.cm
        for c in self.windows:
            self.vc_sum[c] += stats.vc_sum[c]
            self.vc_count[c] += stats.vc_count[c]
        self.evaluated_videos += 1
        self.evaluated_frames += stats.frames

    def result(self, class_names: list[str]) -> dict:
        """``miou``, ``mvc<C>`` per window, ``pixel_acc``, ``mean_class_acc``, ``fwiou`` (fractions)
        and ``per_class_iou``; a metric with nothing to average over is ``None``."""
        metrics = summarize(self.confusion_matrix, class_names)
        consistency = {
            f"mvc{c}": (self.vc_sum[c] / self.vc_count[c] if self.vc_count[c] else None) for c in self.windows
        }
        return {"miou": metrics.pop("miou"), **consistency, **metrics}
