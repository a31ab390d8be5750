"""Prediction with one or several models: each behind its TTA policy, combined by an ensembler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..runtime import autocast


@dataclass
class ModelRunner:
    """A model, its TTA policy and precision: ``images -> probabilities`` at the images' size."""

    name: str
    model: torch.nn.Module
    tta: Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]
    device: torch.device
    amp: str = "none"

    def predict_once(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            return self.model.predict(images).float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.tta(self.predict_once, images)


class Predictor:
    """Runs every model on a batch and fuses their probabilities; returns train ids ``(N, H, W)``."""

    def __init__(self, runners: list[ModelRunner], ensembler: Any) -> None:
        self.runners = runners
        self.ensembler = ensembler

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if len(self.runners) == 1:  # an ensembler of one model is the identity: skip it
            fused = self.runners[0](images)
        else:
            fused = self.ensembler({r.name: r(images) for r in self.runners})
        return fused.argmax(1).to(torch.uint8)
