"""Linear ensemblers: ``fused = sum_t w_t * T_t``, the form ``zoo ensemble search`` searches exactly.

A linear ensembler splits its work in two. Its *terms* ``T_t`` are fixed combinations of the
models' probabilities (each model alone for ``weighted``; the mean of a group for
``hierarchical``) that do not depend on the weights; its *weights* are named numbers
(``gamma``; a model name; a group name) that give each term its weight ``w_t >= 0``. The
fusion itself is :func:`fuse`, the same for every linear ensembler, so the search can
score every grid point from the terms of one pass over the data and get exactly the
labels ``zoo run`` gets with those weights.

Why float64: the terms are float32, and a float64 weighted sum of float32 values keeps
every strict order between classes (a class below another in every term stays below
after weighting, for any weights not all zero). The search relies on it to drop such
classes from a pixel's candidates without ever changing the argmax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import ConfigError

__all__ = ["LinearEnsembler", "fuse", "check_weights"]


def fuse(terms: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``sum_t weights[t] * terms[t]`` in float64, term by term in order (multiply, then add).

    ``zoo run`` and ``zoo ensemble search`` both fuse this way, element by element, so a
    pixel's fused scores are bitwise the same whether the whole frame or a few of its
    pixels are fused.
    """
    if len(terms) != len(weights) or not terms:
        raise ValueError(f"fuse: {len(terms)} terms for {len(weights)} weights")
    total = None
    for weight, term in zip(weights, terms):
        part = term.double() * float(weight)
        total = part if total is None else total.add_(part)
    return total


def check_weights(weights: Mapping[str, float], owner: str) -> None:
    """A :class:`ConfigError` unless every weight is a finite number >= 0 and not all are 0."""
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise ConfigError(f"{owner}: weight {name!r} must be a finite number >= 0, got {value!r}")
    if weights and not any(weights.values()):
        raise ConfigError(f"{owner}: every weight is 0, so every class would score 0; give one a positive weight")


class LinearEnsembler:
    """Base class of an ensembler whose result is :func:`fuse` of its terms and term weights.

    A subclass implements the four methods below and inherits ``__call__``. ``zoo ensemble
    search`` accepts any ensembler derived from this class, a third party's included.
    """

    def weights(self) -> dict[str, float]:
        """The named weights a search may set, with their current values (``{"gamma": 0.56}``)."""
        raise NotImplementedError

    def terms(self, per_model: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """The terms of one batch: float32 ``(N, C, H, W)`` maps that do not depend on the weights."""
        raise NotImplementedError

    def term_weights(self, weights: Mapping[str, float]) -> list[float]:
        """One weight ``>= 0`` per term for a full set of named weights (``gamma`` g gives ``[g, 1 - g]``)."""
        raise NotImplementedError

    def args_with(self, weights: Mapping[str, float]) -> dict[str, Any]:
        """The YAML ``args`` of this ensembler with ``weights`` set: the ``ensemble:`` block a search prints."""
        raise NotImplementedError

    def __call__(self, per_model: Mapping[str, torch.Tensor]) -> torch.Tensor:
        terms = [t.float() for t in self.terms(per_model)]
        return fuse(terms, self.term_weights(self.weights()))
