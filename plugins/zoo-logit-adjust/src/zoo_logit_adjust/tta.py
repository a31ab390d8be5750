"""The post-hoc form of logit adjustment: a TTA policy that takes ``tau * log pi_y`` off a trained model's logits."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zoo_core.errors import ConfigError
from zoo_core.interfaces import BindContext, PredictFn
from zoo_core.model_dir import find_component

from .prior import DEFAULT_TAU, check_min_count, check_tau, log_prior


def adjust(probs: torch.Tensor, log_prior: torch.Tensor, tau: float) -> torch.Tensor:
    """``softmax(log p - tau * log pi)`` over the classes (dim 1): for softmax probabilities p of logits z,
    exactly ``softmax(z - tau * log pi)``."""
    shift = (tau * log_prior).to(probs.device)[None, :, None, None]
    return (probs.float().clamp_min(1e-30).log() - shift).softmax(dim=1)


def _accepts_size(predict: PredictFn) -> bool:
    try:
        params = inspect.signature(predict).parameters
    except (TypeError, ValueError):
        return False
    return "size" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class LogitAdjustTTA:
    """Post-hoc logit adjustment: each view's probabilities p become softmax(log p - tau * log prior).

    The test-time counterpart of the ``logit-adjust`` head (Menon et al.'s post-hoc
    correction), to compare with it on the same weights. ``inner`` is the policy whose views
    are adjusted (``{type: flip}``; default ``identity``): every prediction it asks for is
    adjusted before it averages them. ``stats``, ``tau`` and ``min_count`` as for the head.
    """

    def __init__(
        self,
        stats: str,
        tau: float = DEFAULT_TAU,
        min_count: int = 0,
        inner: Mapping[str, Any] | None = None,
    ):
        self.tau = check_tau(tau, "logit-adjust tta")
        self.stats = Path(stats)
        self.log_prior, self.class_names = log_prior(
            stats, check_min_count(min_count, "logit-adjust tta"), "logit-adjust tta"
        )
        inner = {"type": "identity"} if inner is None else inner
        if not isinstance(inner, Mapping) or not isinstance(inner.get("type"), str) or set(inner) - {"type", "args"}:
            raise ConfigError(
                f"logit-adjust tta: inner must be a policy as {{type: NAME, args: {{...}}}}, got {inner!r}"
            )
        self.inner = find_component("tta", inner["type"]).factory(**dict(inner.get("args") or {}))

    def bind(self, context: BindContext) -> None:
        if len(self.log_prior) != context.num_classes:
            raise ConfigError(
                f"stats: {self.stats} has {len(self.log_prior)} classes but the model predicts {context.num_classes}; "
                "use statistics of the model's training split"
            )
        if context.class_names and list(context.class_names) != self.class_names:
            index = next(i for i, (a, b) in enumerate(zip(self.class_names, context.class_names)) if a != b)
            raise ConfigError(
                f"stats: {self.stats} names class {index} {self.class_names[index]!r} but the model "
                f"{context.class_names[index]!r}; use statistics of the model's training split"
            )
        inner_bind = getattr(self.inner, "bind", None)
        if callable(inner_bind):
            inner_bind(context)

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor:
        if _accepts_size(predict):

            def adjusted(views: torch.Tensor, size: Any = None) -> torch.Tensor:
                return adjust(predict(views, size=size), self.log_prior, self.tau)
        else:

            def adjusted(views: torch.Tensor) -> torch.Tensor:
                return adjust(predict(views), self.log_prior, self.tau)

        return self.inner(adjusted, images)
