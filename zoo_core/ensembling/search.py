"""The grid of ensemble weights, and the scorer that evaluates every grid point exactly in one pass.

Per frame the scorer gets the ensembler's terms ``T_t`` (float32 ``(C, H, W)``) and the
ground truth. A class ``c`` cannot be the first argmax of ``sum_t w_t T_t`` (float64, as
:func:`zoo_core.ensemble.fuse` computes it) for any weights ``w_t >= 0`` not all zero if a
reference class ``r`` *eliminates* it: ``r < c`` and ``T_t(r) >= T_t(c)`` for every term
(``r`` wins the tie by its index), or ``T_t(r) > T_t(c)`` for every term (rounding keeps a
strict float64 order). The references are each term's argmax and the argmax of their sum.
Where every term has the same argmax that class is the only candidate. Pixels left with one
candidate add to a confusion matrix shared by every point; the other (*contested*) pixels
are fused per point over their candidates with the operations of ``fuse``, so each point's
labels are bitwise those ``zoo run`` predicts with its weights.

Per point the scorer keeps the confusion counts of the contested pixels (over the
``(ground truth, prediction)`` pairs that occur) and the video-consistency runs of the
pixels whose prediction differs between points; the sums are added in the order
:class:`~zoo_core.evaluation.consistency.VideoConsistency` and
:class:`~zoo_core.evaluation.evaluator.StreamingEvaluator` add them, so mVC is bitwise
theirs, and mIoU comes from :func:`~zoo_core.evaluation.metrics.summarize`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..ensemble import LinearEnsembler
from ..errors import ConfigError
from ..evaluation.consistency import VideoConsistency, _extend_runs
from ..evaluation.metrics import summarize

MAX_POINTS = 100_000
_GRID = re.compile(r"^([^=\s]+)=([^:]+):([^:]+):([^:]+)$")
_CHUNK = 1 << 22  # float64 scores fused at once (32 MB)


# -- the grid --------------------------------------------------------------------------------------


def parse_grid(items: Sequence[str]) -> dict[str, list[float]]:
    """``NAME=START:STOP:STEP`` axes -> ``{name: values}``: ``round(start + i*step, 10)`` up to STOP (1e-9)."""
    if not items:
        raise ConfigError("give at least one --grid NAME=START:STOP:STEP, e.g. --grid gamma=0:1:0.05")
    axes: dict[str, list[float]] = {}
    for item in items:
        match = _GRID.match(item.strip())
        if not match:
            raise ConfigError(f"--grid {item!r}: expected NAME=START:STOP:STEP with numbers, e.g. gamma=0:1:0.05")
        name = match.group(1)
        try:
            start, stop, step = (float(match.group(i)) for i in (2, 3, 4))
        except ValueError:
            raise ConfigError(f"--grid {item!r}: START, STOP and STEP must be numbers, e.g. {name}=0:1:0.05") from None
        if not all(math.isfinite(v) for v in (start, stop, step)):
            raise ConfigError(f"--grid {item!r}: START, STOP and STEP must be finite numbers")
        if step <= 0:
            raise ConfigError(f"--grid {item!r}: STEP must be > 0, got {match.group(4)}")
        if stop < start:
            raise ConfigError(f"--grid {item!r}: STOP ({match.group(3)}) is below START ({match.group(2)})")
        if start < 0:
            raise ConfigError(f"--grid {item!r}: weights must be >= 0, START is {match.group(2)}")
        if name in axes:
            raise ConfigError(f"--grid {item!r}: {name!r} is gridded twice; give one --grid per name")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_POINTS:
            raise ConfigError(f"--grid {item!r}: {count} values, more than the {MAX_POINTS:,} points a search scores")
        values = [round(start + i * step, 10) for i in range(count + 1)]
        axes[name] = [v for v in values if v <= stop + 1e-9]
    return axes


@dataclass
class Grid:
    """The points of a search: named weights per point and the term weights ``(P, T)`` they give."""

    names: list[str]  # the gridded names, in --grid order
    points: list[dict[str, float]]  # every named weight of the ensembler, per point
    term_weights: np.ndarray  # (P, T) float64
    skipped: int  # points whose term weights are all 0


def build_grid(ensembler: LinearEnsembler, axes: Mapping[str, list[float]], label: str) -> Grid:
    """Every combination of the axes; names not gridded keep the pipeline's values. Checks names and sizes."""
    base = dict(ensembler.weights())
    unknown = [name for name in axes if name not in base]
    if unknown:
        raise ConfigError(f"--grid {unknown[0]}: not a weight of {label}; its weights are: {', '.join(base)}")
    total = math.prod(len(v) for v in axes.values())
    if total > MAX_POINTS:
        sizes = " x ".join(f"{len(v)} {name}" for name, v in axes.items())
        raise ConfigError(f"--grid: {sizes} = {total:,} points, more than {MAX_POINTS:,}; use coarser steps")
    points, rows, skipped = [], [], 0
    for combo in itertools.product(*axes.values()):
        weights = dict(base, **dict(zip(axes, combo)))
        terms = [float(w) for w in ensembler.term_weights(weights)]
        bad = [w for w in terms if not (w >= 0 and math.isfinite(w))]
        if bad:
            shown = ", ".join(f"{k}={v:g}" for k, v in weights.items())
            raise ConfigError(
                f"--grid: at {shown} {label} weighs a term {bad[0]:g}; every term weight must be a finite number "
                ">= 0 (gamma stays within 0..1): narrow the grid"
            )
        if not any(terms):
            skipped += 1
            continue
        points.append(weights)
        rows.append(terms)
    if not points:
        raise ConfigError("--grid: every point gives all terms the weight 0; grid at least one positive weight")
    return Grid(list(axes), points, np.array(rows, dtype=np.float64), skipped)


# -- per-pixel candidates --------------------------------------------------------------------------


def candidate_mask(values: np.ndarray) -> np.ndarray:
    """``(C, M)`` bool: the classes no reference eliminates, for terms ``values`` of shape ``(T, C, M)``."""
    num_terms, num_classes, m = values.shape
    cols = np.arange(m)
    classes = np.arange(num_classes)[:, None]
    refs = [values[t].argmax(0) for t in range(num_terms)] + [values.sum(0).argmax(0)]
    alive = np.ones((num_classes, m), dtype=bool)
    for ref in refs:
        weak = np.ones((num_classes, m), dtype=bool)
        strict = np.ones((num_classes, m), dtype=bool)
        for t in range(num_terms):
            top = values[t, ref, cols]
            weak &= values[t] <= top
            strict &= values[t] < top
        weak &= classes > ref
        alive &= ~(weak | strict)
    return alive


def fused_labels(values: np.ndarray, alive: np.ndarray, term_weights: np.ndarray) -> np.ndarray:
    """``(P, M)`` uint8: per point the first argmax of ``fuse`` over each pixel's candidate classes.

    ``values`` ``(T, C, M)`` float32, ``alive`` ``(C, M)`` bool with at least one class per pixel.
    Pixels are grouped by their number of candidates (up to a power of two) so that padding is small.
    """
    points = term_weights.shape[0]
    m = values.shape[2]
    labels = np.empty((points, m), dtype=np.uint8)
    counts = alive.sum(0)
    width = np.minimum(1 << np.ceil(np.log2(counts)).astype(np.int64), alive.shape[0])
    for k in np.unique(width):
        pixels = np.flatnonzero(width == k)
        # candidates in ascending class order, then padding (stable sort puts the alive classes first)
        cand = np.argsort(~alive[:, pixels], axis=0, kind="stable")[:k]  # (K, Mb)
        pad = np.arange(k)[:, None] >= counts[pixels][None, :]
        cols = pixels[None, :]
        terms = [values[t, cand, cols].astype(np.float64) for t in range(values.shape[0])]
        step = max(1, _CHUNK // cand.size)
        for lo in range(0, points, step):
            w = term_weights[lo : lo + step]
            total = None
            for t, term in enumerate(terms):  # as fuse: part = term * w; total += part
                part = term[None] * w[:, t, None, None]
                total = part if total is None else np.add(total, part, out=total)
            total[:, pad] = -np.inf
            labels[lo : lo + step, pixels] = cand[total.argmax(1), np.arange(pixels.size)]
    return labels


# -- video consistency of many predictions that differ at few pixels ----------------------------


class GridConsistency:
    """:class:`VideoConsistency` of P predictions that agree outside a few pixels, fed a frame at a time.

    Runs are kept per point only at the *divergent* pixels (contested now, or since with runs
    that still differ between points); elsewhere one run serves every point.
    """

    def __init__(self, points: int, windows: Sequence[int]):
        self.points = points
        self.windows = VideoConsistency(windows).windows
        self.frames = 0
        self.sums = np.zeros((points, len(self.windows)), dtype=np.float64)
        self.counts = np.zeros(len(self.windows), dtype=np.int64)
        self._pending: list[tuple[int, np.ndarray, int]] = []

    def update(self, base: np.ndarray, where: np.ndarray, labels: np.ndarray, gt: np.ndarray) -> None:
        """``base`` (N,) uint8 the prediction of every point, except at the sorted pixels ``where`` (M,),
        whose labels are ``labels`` (P, M); ``gt`` (N,) uint8."""
        for i, consistent, stable in self._pending:
            if stable:  # as VideoConsistency: an empty stable region is dropped
                self.sums[:, i] += consistent / stable
                self.counts[i] += 1
        self._pending.clear()
        cap = self.windows[-1]
        if self.frames == 0:
            self._prev_gt, self._prev = gt.copy(), base.copy()
            self._run_gt = np.ones(gt.shape, np.uint8)
            self._run = np.ones(gt.shape, np.uint8)
            self._cap = np.full(gt.shape, cap, np.uint8)
            self._where = where.copy()
            self._d_run = np.ones(labels.shape, np.uint8)
            self._d_prev = labels.copy()
        else:
            _extend_runs(self._run_gt, self._prev_gt, gt, self._cap)
            new = np.setdiff1d(where, self._where, assume_unique=True)
            if new.size:  # pixels that diverge from now on start from the shared run
                merged = np.union1d(self._where, new)
                d_run = np.empty((self.points, merged.size), np.uint8)
                d_prev = np.empty_like(d_run)
                old_at, new_at = np.searchsorted(merged, self._where), np.searchsorted(merged, new)
                d_run[:, old_at], d_prev[:, old_at] = self._d_run, self._d_prev
                d_run[:, new_at], d_prev[:, new_at] = self._run[new], self._prev[new]
                self._where, self._d_run, self._d_prev = merged, d_run, d_prev
            current = np.repeat(base[self._where][None], self.points, axis=0)
            current[:, np.searchsorted(self._where, where)] = labels
            _extend_runs(self._run, self._prev, base, self._cap)  # stale at the divergent pixels
            _extend_runs(self._d_run, self._d_prev, current, np.full(current.shape, cap, np.uint8))
            same = (self._d_run == self._d_run[0]).all(0) & (self._d_prev == self._d_prev[0]).all(0)
            if same.any():  # runs that agree again go back to the shared run
                back = self._where[same]
                self._run[back], self._prev[back] = self._d_run[0, same], self._d_prev[0, same]
                keep = ~same
                self._where, self._d_run, self._d_prev = self._where[keep], self._d_run[:, keep], self._d_prev[:, keep]
        self.frames += 1
        ready = [(i, c) for i, c in enumerate(self.windows) if self.frames >= c]
        if ready:
            both = np.minimum(self._run_gt, self._run)
            both_where = np.minimum(self._run_gt[self._where][None], self._d_run)
            for i, c in ready:
                shared = np.count_nonzero(both >= c) - np.count_nonzero(both[self._where] >= c)
                consistent = shared + np.count_nonzero(both_where >= c, axis=1)
                self._pending.append((i, consistent, int(np.count_nonzero(self._run_gt >= c))))


# -- statistics ---------------------------------------------------------------------------------


@dataclass
class GridStats:
    """Confusion and consistency statistics of every grid point, for one video or merged over several.

    The confusion matrix of point ``p`` is ``shared`` plus ``counts[p]`` at the flat indices ``codes``
    (``gt * C + prediction``).
    """

    shared: np.ndarray  # (C, C) int64
    codes: np.ndarray  # (S,) int64
    counts: np.ndarray  # (P, S) int64
    vc_sum: np.ndarray  # (P, W) float64
    vc_count: np.ndarray  # (W,) int64
    frames: int = 0

    @classmethod
    def empty(cls, points: int, num_classes: int, windows: int) -> GridStats:
        return cls(
            np.zeros((num_classes, num_classes), np.int64),
            np.zeros(0, np.int64),
            np.zeros((points, 0), np.int64),
            np.zeros((points, windows), np.float64),
            np.zeros(windows, np.int64),
        )

    def add(self, other: GridStats) -> None:
        """Merge another video's statistics; the mVC sums add in call order (that of the videos)."""
        self.shared += other.shared
        codes = np.union1d(self.codes, other.codes)
        if codes.size != self.codes.size:
            counts = np.zeros((self.counts.shape[0], codes.size), np.int64)
            counts[:, np.searchsorted(codes, self.codes)] = self.counts
            self.codes, self.counts = codes, counts
        self.counts[:, np.searchsorted(self.codes, other.codes)] += other.counts
        self.vc_sum += other.vc_sum
        self.vc_count += other.vc_count
        self.frames += other.frames

    def confusion(self, point: int) -> np.ndarray:
        cm = self.shared.copy()
        cm.ravel()[self.codes] += self.counts[point]
        return cm

    def metrics(self, point: int, class_names: list[str], windows: Sequence[int]) -> dict:
        """As :meth:`StreamingEvaluator.result`: ``miou``, ``mvc<C>``, the other metrics, ``per_class_iou``."""
        found = summarize(self.confusion(point), class_names)
        consistency = {
            f"mvc{c}": (float(self.vc_sum[point, i] / self.vc_count[i]) if self.vc_count[i] else None)
            for i, c in enumerate(windows)
        }
        return {"miou": found.pop("miou"), **consistency, **found}


class GridScorer:
    """Scores every grid point on a stream of frames: ``start_video``, ``update`` per frame, ``end_video``."""

    def __init__(self, term_weights: np.ndarray, num_classes: int, windows: Sequence[int] = (8, 16)):
        self.term_weights = np.asarray(term_weights, dtype=np.float64)
        self.points = self.term_weights.shape[0]
        self.num_classes = num_classes
        self.windows = VideoConsistency(windows).windows
        self.contested = 0  # pixels scored per point, over all frames
        self.pixels = 0

    def start_video(self) -> None:
        c = self.num_classes
        self._shared = np.zeros(256 * c, np.int64)
        self._column = np.full(c * c, -1, np.int64)  # gt * C + pred -> column of _counts
        self._codes: list[int] = []
        self._counts = np.zeros((self.points, 0), np.int64)
        self._consistency = GridConsistency(self.points, self.windows)

    def update(self, terms: Sequence[np.ndarray], gt: np.ndarray) -> None:
        """The next frame: each term ``(C, H, W)`` float32 (as the ensembler computed it), ``gt`` ``(H, W)`` uint8."""
        c = self.num_classes
        flat = [np.asarray(t, dtype=np.float32).reshape(c, -1) for t in terms]
        gt = gt.ravel()
        firsts = [t.argmax(0) for t in flat]
        base = firsts[0].astype(np.uint8)
        differ = np.zeros(base.shape, dtype=bool)
        for other in firsts[1:]:
            differ |= other != firsts[0]
        where = np.flatnonzero(differ)
        labels = np.empty((self.points, 0), np.uint8)
        if where.size:
            values = np.stack([t[:, where] for t in flat])  # (T, C, M)
            alive = candidate_mask(values)
            single = alive.sum(0) == 1
            base[where[single]] = alive[:, single].argmax(0)
            keep = ~single
            where, values, alive = where[keep], values[:, :, keep], alive[:, keep]
            if where.size:
                labels = fused_labels(values, alive, self.term_weights)
        self.pixels += base.size
        self.contested += where.size
        # the pixels every point predicts alike; contested ones go to an ignored row (as gt 255 does)
        index = gt.astype(np.uint16) * c + base
        index[where] = 255 * c
        self._shared += np.bincount(index, minlength=256 * c)
        if where.size:
            self._count_contested(gt[where], alive, labels)
        self._consistency.update(base, where, labels, gt)

    def _count_contested(self, gt: np.ndarray, alive: np.ndarray, labels: np.ndarray) -> None:
        c = self.num_classes
        valid = gt < c
        if not valid.any():
            return
        gt, alive, labels = gt[valid].astype(np.int64), alive[:, valid], labels[:, valid]
        cls, pix = np.nonzero(alive)
        possible = np.unique(gt[pix] * c + cls)
        new = possible[self._column[possible] < 0]
        if new.size:
            self._column[new] = np.arange(len(self._codes), len(self._codes) + new.size)
            self._codes += new.tolist()
            self._counts = np.pad(self._counts, ((0, 0), (0, new.size)))
        width = len(self._codes)
        index = self._column[gt[None] * c + labels] + (np.arange(self.points) * width)[:, None]
        self._counts += np.bincount(index.ravel(), minlength=self.points * width).reshape(self.points, width)

    def end_video(self) -> GridStats:
        c = self.num_classes
        order = np.argsort(self._codes)
        consistency = self._consistency
        # the window ending at the last frame stays pending: dropped, as officially
        return GridStats(
            shared=self._shared[: c * c].reshape(c, c).copy(),
            codes=np.asarray(self._codes, np.int64)[order],
            counts=self._counts[:, order],
            vc_sum=consistency.sums.copy(),
            vc_count=consistency.counts.copy(),
            frames=consistency.frames,
        )
