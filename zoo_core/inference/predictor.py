"""Prediction with one or several models: each behind its TTA policy, combined by an ensembler.

Every call into a component (the model, its TTA policy, the ensembler) runs under
:func:`~zoo_core.errors.component_errors`, so whatever it raises reaches the user as one
line naming that component and its distribution (``zoo run`` adds the video and frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ComponentError, component_errors
from ..interfaces import Ensembler, TTAPolicy
from ..runtime import autocast


@dataclass
class ModelRunner:
    """A model, its TTA policy and precision: ``images -> probabilities`` at the images' size.

    ``label`` and ``tta_label`` name the model and the policy in error messages
    (``model 'swin' (backbone 'timm', heads 'fcn', 'ocr': zoo-core 0.1.0)``).
    """

    name: str
    model: torch.nn.Module
    tta: TTAPolicy
    device: torch.device
    amp: str = "none"
    label: str = ""
    tta_label: str = ""

    def predict_once(
        self, images: torch.Tensor, size: Sequence[int] | None = None, add_to: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The PredictFn a TTA policy gets: the model's probabilities at ``size`` (see ``Segmentor.predict``)."""
        with autocast(self.device, self.amp), component_errors(self.label or f"model {self.name!r}"):
            if size is None and add_to is None:  # the plain call: a model whose predict takes images alone works
                return self.model.predict(images).float()
            return self.model.predict(images, size=size, add_to=add_to).float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        label = self.tta_label or f"the TTA policy of model {self.name!r}"
        with component_errors(label):
            return _checked(self.tta(self.predict_once, images), images, label)


class Predictor:
    """Runs every model on a batch and fuses their probabilities; returns train ids ``(N, H, W)``."""

    def __init__(self, runners: list[ModelRunner], ensembler: Ensembler, ensembler_label: str = "the ensembler"):
        self.runners = runners
        self.ensembler = ensembler
        self.ensembler_label = ensembler_label

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if len(self.runners) == 1:  # an ensembler of one model is the identity: skip it (bind checked it)
            fused = self.runners[0](images)
        else:
            per_model = {r.name: r(images) for r in self.runners}
            with component_errors(self.ensembler_label):
                fused = _checked(self.ensembler(per_model), images, self.ensembler_label)
        return fused.argmax(1).to(torch.uint8)


def _checked(probs: object, images: torch.Tensor, label: str) -> torch.Tensor:
    """``probs`` if it is ``(N, C, H, W)`` at the images' batch and size, else a :class:`ComponentError`."""
    n, _, height, width = images.shape
    if not (
        isinstance(probs, torch.Tensor)
        and probs.ndim == 4
        and probs.shape[0] == n
        and tuple(probs.shape[-2:]) == (height, width)
    ):
        got = f"shape {tuple(probs.shape)}" if isinstance(probs, torch.Tensor) else f"a {type(probs).__name__}"
        raise ComponentError(
            label, f"returned {got}; expected class probabilities of shape ({n}, C, {height}, {width})"
        )
    return probs
