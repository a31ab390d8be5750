"""VSPW's own raw label ids -> train ids."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.classes import VSPW_CLASSES
from ..errors import DataError
from ..interfaces import IGNORE_INDEX


class LUTRemapper:
    """A 256-entry lookup table from source values to train ids, and the labelled-fraction filter."""

    lut: np.ndarray
    source_classes: list[str]

    def __init__(self, min_labelled: float = 0.0):
        if not 0.0 <= min_labelled <= 1.0:
            raise ValueError(f"min_labelled must be a fraction in [0, 1], got {min_labelled}")
        self.min_labelled = min_labelled

    def __call__(self, mask: Any) -> Any:
        """Remap a label map (numpy array or torch tensor of values 0..255); returns the same kind, uint8."""
        if isinstance(mask, torch.Tensor):
            _check_range(mask.min().item() if mask.numel() else 0, mask.max().item() if mask.numel() else 0)
            return torch.from_numpy(self.lut).to(mask.device)[mask.long()]
        mask = np.asarray(mask)
        if mask.dtype != np.uint8:
            if mask.size:
                _check_range(mask.min(), mask.max())
            mask = mask.astype(np.uint8)
        return self.lut[mask]

    def keep(self, remapped_mask: Any) -> bool:
        """Whether at least ``min_labelled`` of the pixels carry a train id after remapping."""
        labelled = remapped_mask != IGNORE_INDEX
        fraction = float(labelled.float().mean()) if isinstance(labelled, torch.Tensor) else float(np.mean(labelled))
        return fraction >= self.min_labelled


def _check_range(low: Any, high: Any) -> None:
    if low < 0 or high > 255:
        raise DataError(f"label map values must be 0..255 (8-bit label PNGs), found {low}..{high}; "
                        "the file is not a label map of this dataset")


class VSPWRemapper(LUTRemapper):
    """VSPW raw ids -> train ids: 0 ("others") and 255 ignored, 1..124 -> 0..123."""

    def __init__(self, min_labelled: float = 0.0):
        super().__init__(min_labelled)
        num_classes = len(VSPW_CLASSES)
        self.lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        self.lut[1:num_classes + 1] = np.arange(num_classes, dtype=np.uint8)
        self.source_classes = ["others", *VSPW_CLASSES]
