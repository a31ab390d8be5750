"""Ensemblers: per-model probabilities of one frame -> one map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..ensemble import LinearEnsembler, check_weights
from ..errors import ConfigError
from ..interfaces import BindContext


def _check_models(per_model: Mapping[str, torch.Tensor]) -> None:
    if not per_model:
        raise ConfigError("the ensembler got no model predictions; list at least one model in the pipeline")
    shapes = {name: tuple(p.shape) for name, p in per_model.items()}
    if len(set(shapes.values())) > 1:
        raise ConfigError(
            f"the models predict maps of different shapes {shapes}; "
            "every model must predict the same classes at the frame's size"
        )


class MeanEnsembler:
    """Mean of every model's probabilities."""

    def __call__(self, per_model: Mapping[str, torch.Tensor]) -> torch.Tensor:
        _check_models(per_model)
        total = None
        for probs in per_model.values():
            total = probs.float() if total is None else total + probs.float()
        return total / len(per_model)


class WeightedEnsembler(LinearEnsembler):
    """Weighted sum of the models' probabilities: ``gamma`` for two models, or ``weights``.

    ``gamma: g`` with exactly two models gives ``g * P1 + (1 - g) * P2`` in the pipeline's
    model order (3rd place: g = 0.56, Swin first, VOLO second). ``weights`` is a mapping
    from model name to weight, or a list in model order. The weights are used as given
    (only the argmax of the result matters). ``zoo ensemble search`` searches ``gamma`` or
    the model names.
    """

    def __init__(self, weights: Mapping[str, float] | Sequence[float] | None = None, gamma: float | None = None):
        if (weights is None) == (gamma is None):
            raise ValueError("give exactly one of gamma (two models) or weights (one per model)")
        if gamma is not None and not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.weights_arg = (
            dict(weights) if isinstance(weights, Mapping) else (None if weights is None else list(weights))
        )
        if self.weights_arg is not None:
            named = self.weights_arg if isinstance(self.weights_arg, dict) else dict(enumerate(self.weights_arg))
            check_weights({str(k): v for k, v in named.items()}, "weighted ensembler")
        self.gamma = gamma
        self.model_names: list[str] | None = None  # set by bind, or by the first frame

    def model_weights(self, names: Sequence[str]) -> list[float]:
        """The weight of each named model, in order; a clear error if they do not match the configuration."""
        if self.gamma is not None:
            if len(names) != 2:
                raise ConfigError(
                    f"weighted ensembler: gamma needs exactly two models, the pipeline has "
                    f"{len(names)} ({', '.join(names)}); use weights for more"
                )
            return [self.gamma, 1.0 - self.gamma]
        if isinstance(self.weights_arg, list):
            if len(self.weights_arg) != len(names):
                raise ConfigError(
                    f"weighted ensembler: {len(self.weights_arg)} weights for {len(names)} models "
                    f"({', '.join(names)}); give one weight per model, in model order"
                )
            return self.weights_arg
        unknown = sorted(set(self.weights_arg) - set(names))
        missing = [n for n in names if n not in self.weights_arg]
        if unknown or missing:
            problems = []
            if unknown:
                problems.append(f"unknown model name(s) {', '.join(unknown)}")
            if missing:
                problems.append(f"no weight for {', '.join(missing)}")
            raise ConfigError(
                f"weighted ensembler: {'; '.join(problems)}; the pipeline's models are: {', '.join(names)}"
            )
        return [self.weights_arg[n] for n in names]

    def bind(self, context: BindContext) -> None:
        """Check ``weights`` or ``gamma`` against the pipeline's models before any model loads."""
        self.model_weights(list(context.model_names))
        self.model_names = list(context.model_names)

    def _names(self) -> list[str]:
        if self.model_names is None:
            raise ConfigError("weighted ensembler: the model names are not known yet (bind it to the pipeline first)")
        return self.model_names

    def weights(self) -> dict[str, float]:
        if self.gamma is not None:
            return {"gamma": self.gamma}
        return dict(zip(self._names(), self.model_weights(self._names())))

    def terms(self, per_model: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        _check_models(per_model)
        if self.model_names is None or list(per_model) != self.model_names:
            self.model_weights(list(per_model))  # a clear error if the names do not fit
            self.model_names = list(per_model)
        return [per_model[name] for name in self.model_names]

    def term_weights(self, weights: Mapping[str, float]) -> list[float]:
        if self.gamma is not None:
            return [float(weights["gamma"]), 1.0 - float(weights["gamma"])]
        return [float(weights[name]) for name in self._names()]

    def args_with(self, weights: Mapping[str, float]) -> dict:
        if self.gamma is not None:
            return {"gamma": float(weights["gamma"])}
        return {"weights": {name: float(weights[name]) for name in self._names()}}
