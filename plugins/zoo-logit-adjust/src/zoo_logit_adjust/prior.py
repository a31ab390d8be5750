"""The class prior of logit adjustment: ``log pi_y`` from the pixel counts ``zoo data stats`` wrote."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from zoo_core.errors import ConfigError, DataError
from zoo_core.interfaces import read_class_stats

DEFAULT_TAU = 0.03  # the report's value (3.1), found by a search on VSPW val


def check_tau(tau: float, where: str) -> float:
    """``tau`` as a float; a ConfigError for a negative or non-finite one."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise ConfigError(
            f"{where}: tau must be a number >= 0 (the weight of log prior; the report uses {DEFAULT_TAU}), got {tau!r}"
        )
    return float(tau)


def check_min_count(min_count: int, where: str) -> int:
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 0:
        raise ConfigError(
            f"{where}: min_count must be an integer >= 0 (pixel counts below it are raised to it), got {min_count!r}"
        )
    return min_count


def log_prior(stats: str | Path, min_count: int = 0, where: str = "logit-adjust") -> tuple[torch.Tensor, list[str]]:
    """``(log pi_y as float32 (K,), class names)``: pi_y the share of labelled pixels of class y.

    Counts below ``min_count`` are raised to it first (additive smoothing for classes the
    split never shows). A class with 0 pixels and ``min_count`` 0 would get ``log 0 = -inf``:
    refused, naming the class and what to do.
    """
    min_count = check_min_count(min_count, where)
    data = read_class_stats(stats)
    counts = np.maximum(data["pixel_counts"].astype(np.float64), float(min_count))
    names = list(data["class_names"])
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        shown = ", ".join(f"{names[i]!r} (train id {i})" for i in empty[:3])
        more = f" and {empty.size - 3} more" if empty.size > 3 else ""
        raise DataError(
            f"class statistics {stats}: class {shown}{more} has 0 pixels, so its log prior is -inf; add "
            f"min_count: 1 to the args of the {where} (counts below it are raised to it), or count a split "
            "where every class appears"
        )
    return torch.from_numpy(np.log(counts / counts.sum())).float(), names
