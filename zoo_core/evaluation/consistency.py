"""Video consistency mVC_C, streamed one frame at a time in constant memory per video.

The official definition (see VSPW.md) looks at every window of ``C`` consecutive frames
``i .. i+C-1`` for ``i`` in ``0 .. N-C-1``: among the pixels whose ground truth keeps one
value across the window, the score is the fraction whose prediction also keeps one value.
Instead of keeping ``C`` frames, each pixel carries the length of its current run of
unchanged ground truth and of unchanged prediction (uint8, capped at the largest window):
the window ending at frame ``t`` is stable at a pixel exactly when its run is ``>= C``.
Ground truth is compared in train-id space, so the ignore value 255 is just another label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class VideoConsistency:
    """The mVC windows of one video: feed its frames in order, then call :meth:`finish`."""

    def __init__(self, windows: Sequence[int] = (8, 16)):
        self.windows = tuple(sorted({int(c) for c in windows}))
        # Runs are uint8 and are incremented before capping, so the cap must stay below 255.
        if not self.windows or self.windows[0] < 2 or self.windows[-1] > 254:
            raise ValueError(f"window lengths must be in 2..254, got {tuple(windows)}")
        self.frames = 0
        self._sums = dict.fromkeys(self.windows, 0.0)
        self._counts = dict.fromkeys(self.windows, 0)
        # (stable-and-consistent pixels, stable pixels) of the window ending at the latest frame.
        # It only counts once another frame follows: the official loop never uses the window
        # that ends at the video's last frame.
        self._pending: dict[int, tuple[int, int]] = {}

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add the next frame: HxW uint8 train ids, the same size for every frame of the video."""
        for c, (consistent, stable) in self._pending.items():
            if stable:  # an empty stable region is the official NaN window: dropped
                self._sums[c] += consistent / stable
                self._counts[c] += 1
        self._pending.clear()

        if self.frames == 0:
            self._prev_gt, self._prev_pred = gt.copy(), pred.copy()
            self._run_gt = np.ones(gt.shape, np.uint8)
            self._run_pred = np.ones(gt.shape, np.uint8)
            # A full array rather than a scalar: np.minimum with a scalar is ~20x slower on uint8.
            self._cap = np.full(gt.shape, self.windows[-1], np.uint8)
        else:
            _extend_runs(self._run_gt, self._prev_gt, gt, self._cap)
            _extend_runs(self._run_pred, self._prev_pred, pred, self._cap)
        self.frames += 1

        ready = [c for c in self.windows if self.frames >= c]
        if ready:
            both = np.minimum(self._run_gt, self._run_pred)
            for c in ready:
                self._pending[c] = (int(np.count_nonzero(both >= c)), int(np.count_nonzero(self._run_gt >= c)))

    def finish(self) -> tuple[dict[int, float], dict[int, int]]:
        """Per window length: the sum of the video's window scores and the number of windows
        that have a score. The window ending at the last frame is dropped, as officially."""
        return dict(self._sums), dict(self._counts)


def _extend_runs(run: np.ndarray, previous: np.ndarray, current: np.ndarray, cap: np.ndarray) -> None:
    """In place: runs grow where the value is unchanged, restart at 1 where it changed."""
    unchanged = np.equal(previous, current).view(np.uint8)  # a uint8 view avoids a casting loop
    np.multiply(run, unchanged, out=run)
    run += 1
    np.minimum(run, cap, out=run)
    np.copyto(previous, current)
