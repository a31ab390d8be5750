"""Prediction with one or several models: each behind its TTA policy, combined by an ensembler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in {none, bf16, fp16}; bf16 is the CPU speed lever."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"runtime.device: {name!r} is not a device ({exc}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} asked for, but no CUDA device is available; use --device cpu")
    return device


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
