"""The training set of one run: the samples of every source, each augmented from its own seed, and
the order an epoch visits them in (each source's share set by its ratio), a function of
``(seed, epoch)`` only so every process and every resumed run sees the same order."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .classes import VSPW_CLASSES
from .vspw import Transform, normalize

# Separates the epoch-order random stream from the per-sample streams rng((seed, epoch, index)).
ORDER_STREAM = 0x0D5E


class Part:
    """One source of the mix: the kept samples of a reader with ``load(i)``, and its ratio."""

    def __init__(self, name: str, dataset: Any, indices: Sequence[int], ratio: float) -> None:
        self.name, self.dataset, self.indices, self.ratio = name, dataset, list(indices), ratio

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.load(self.indices[index])


class TrainSet(torch.utils.data.Dataset):
    """The training samples of every source, as ``(normalized image (3, H, W), int64 mask (H, W))``.

    Sample ``i`` is augmented with ``np.random.default_rng((seed, epoch, i))`` like
    :class:`TrainFrames`, so a single VSPW source gives exactly the samples of TrainFrames.
    :meth:`epoch_order` says which samples an epoch visits; with several sources it draws
    each source's share of ``len(self)`` from its ratio.
    """

    def __init__(
        self,
        parts: Sequence[Part],
        transforms: Transform | None,
        seed: int = 0,
        class_names: Sequence[str] = VSPW_CLASSES,
    ) -> None:
        if not parts:
            raise ConfigError("the training set needs at least one source")
        if seed < 0:
            raise ConfigError(f"train.seed must be 0 or more, got {seed}")
        self.parts = list(parts)
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0
        self.class_names = list(class_names)
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts]).tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(source, index within the source)`` of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is out of range 0..{len(self) - 1}")
        source = bisect.bisect_right(self.offsets, index) - 1
        return source, index - self.offsets[source]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        source, local = self.locate(index)
        image, mask = self.parts[source].load(local)
        if self.transforms is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, mask = self.transforms(image, mask, rng)
        return normalize(image), torch.from_numpy(mask.astype(np.int64))

    def shares(self) -> list[int]:
        """Samples per epoch of each source: ``len(self) * ratio / sum(ratios)``, rounded to sum exactly."""
        return proportional_counts(len(self), [part.ratio for part in self.parts])

    def epoch_order(self, epoch: int) -> list[int]:
        """The sample indices of epoch ``epoch``: a function of ``(seed, epoch)`` only, the same in every process.

        One source: a permutation of ``range(len(self))``. Several: source ``k`` contributes
        ``shares()[k]`` samples, without replacement while it has enough (a permutation of its
        samples, repeated when it is asked for more), and the whole is shuffled.
        """
        rng = np.random.default_rng(np.random.SeedSequence((self.seed, epoch), spawn_key=(ORDER_STREAM,)))
        if len(self.parts) == 1:
            return rng.permutation(len(self)).tolist()
        picks = []
        for part, offset, count in zip(self.parts, self.offsets, self.shares()):
            cycles = -(-count // len(part))
            picks.append(np.tile(rng.permutation(len(part)), cycles)[:count] + offset)
        order = np.concatenate(picks)
        rng.shuffle(order)
        return order.tolist()

    def __repr__(self) -> str:
        parts = ", ".join(f"{part.name}: {len(part)}" for part in self.parts)
        return f"TrainSet({parts}; seed={self.seed})"


def proportional_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``ratios`` by largest remainder (ties to the earlier source)."""
    exact = [total * ratio / sum(ratios) for ratio in ratios]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts
