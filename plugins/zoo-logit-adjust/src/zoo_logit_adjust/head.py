"""The ``logit-adjust`` head: another head whose final classifier is a cosine classifier with a prior bias.

The 5th-place report (3.1, eq. 2): ``logits_y = s * cos(w_y, f(x)) + tau * log pi_y``. The
cosine part is learned; ``tau * log pi_y`` is a fixed bias from the class prior, added while
training only, so that prediction uses the learned part alone. In a model the wrapped head
keeps its place in the cascade (``prev_output``, ``loss_weight``); its weights are stored
under ``head.`` plus the inner head's own names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo_core.errors import ConfigError
from zoo_core.interfaces import HeadOutput
from zoo_core.model_dir import find_component

from .prior import DEFAULT_TAU, check_min_count, check_tau, log_prior


class CosineClassifier(nn.Module):
    """``scale * cos(w_y, f)`` over the channels (dim 1 of a conv map, the last dim of a Linear's input).

    In train mode ``tau * log pi_y`` is added to the first ``num_classes`` outputs (a
    ``K + 1``-th output, MaskFormer's "no object", gets no prior). The prior is read from
    ``stats`` when the module is first put in train mode (``zoo train`` does so before its
    first iteration), never in eval mode: a model directory predicts without the stats file.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        conv: bool,
        num_classes: int,
        stats: str | Path,
        tau: float,
        min_count: int,
        scale: float,
        learn_scale: bool,
    ):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().reshape(weight.shape[0], -1).clone())
        self.conv = conv
        scale_value = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale_value)
        else:
            self.register_buffer("scale", scale_value)
        self.num_classes = num_classes
        self.stats, self.tau, self.min_count = stats, tau, min_count
        self._bias: torch.Tensor | None = None

    def prior_bias(self) -> torch.Tensor:
        """``tau * log pi_y`` per output (0 for a no-object output), read once from the stats."""
        if self._bias is None:
            prior, _ = log_prior(self.stats, self.min_count, "logit-adjust head")
            if len(prior) != self.num_classes:
                raise ConfigError(
                    f"logit-adjust: class statistics {self.stats} have {len(prior)} classes but the head predicts "
                    f"{self.num_classes}; use statistics of a dataset with the model's label set"
                )
            extra = self.weight.shape[0] - self.num_classes  # 1 for a mask-classification head's "no object"
            self._bias = torch.cat([self.tau * prior, prior.new_zeros(extra)])
        return self._bias

    def train(self, mode: bool = True) -> CosineClassifier:
        if mode:
            self.prior_bias()  # a missing or unusable stats file fails when training starts, not mid-step
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.weight, dim=1)
        if self.conv:
            logits = F.conv2d(F.normalize(x, dim=1), weight[:, :, None, None])
        else:
            logits = F.linear(F.normalize(x, dim=-1), weight)
        logits = self.scale * logits
        if self.training:
            bias = self.prior_bias().to(logits.device, logits.dtype)
            logits = logits + (bias[:, None, None] if self.conv else bias)
        return logits


class LogitAdjustedHead(nn.Module):
    """A head whose final classifier is cosine with a tau * log(prior) bias in training (5th place, 3.1).

    ``head`` is the wrapped head as a model config writes it (``{type: ocr, args: {...}}``);
    it must expose its final classifier (``classifier_path``: the core's ``fcn``, ``ocr`` and
    ``uper`` do, and the ``maskformer`` class head, whose "no object" output gets no prior).
    ``stats``: the ``zoo data stats`` file of the training split; ``tau`` 0.03 as in the
    report; ``min_count`` raises smaller pixel counts to it (a class the split never shows
    needs it); ``scale`` is the cosine scale ``s`` (the report gives none; 16 to start),
    learned unless ``learn_scale`` is false.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        num_classes: int,
        head: Mapping[str, Any],
        stats: str,
        tau: float = DEFAULT_TAU,
        min_count: int = 0,
        scale: float = 16.0,
        learn_scale: bool = True,
    ):
        super().__init__()
        tau = check_tau(tau, "logit-adjust head")
        min_count = check_min_count(min_count, "logit-adjust head")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
            raise ConfigError(f"logit-adjust head: scale must be a positive number (the cosine scale), got {scale!r}")
        if not isinstance(head, Mapping) or not isinstance(head.get("type"), str) or set(head) - {"type", "args"}:
            raise ConfigError(
                f"logit-adjust head: head must be the wrapped head as {{type: NAME, args: {{...}}}}, got {head!r}"
            )
        entry = find_component("head", head["type"])
        self.head = entry.factory(
            in_channels=in_channels, in_strides=in_strides, num_classes=num_classes, **dict(head.get("args") or {})
        )
        path = getattr(self.head, "classifier_path", None)
        if not isinstance(path, str):
            raise ConfigError(
                f"logit-adjust head: {entry.describe()} does not say where its final classifier is (no "
                "`classifier_path`); wrap fcn, ocr, uper, maskformer or a head derived from zoo_core.nn.BaseDecodeHead"
            )
        parent_path, _, name = path.rpartition(".")
        old = self.head.get_submodule(path)
        conv = isinstance(old, nn.Conv2d)
        if not (conv and old.kernel_size == (1, 1) and old.groups == 1) and not isinstance(old, nn.Linear):
            raise ConfigError(
                f"logit-adjust head: the classifier {path} of {entry.describe()} is a {type(old).__name__}; "
                "only a 1x1 Conv2d or a Linear can be made cosine"
            )
        classifier = CosineClassifier(old.weight, conv, num_classes, stats, tau, min_count, scale, learn_scale)
        setattr(self.head.get_submodule(parent_path) if parent_path else self.head, name, classifier)
        self.classifier_path = f"head.{path}"
        self.num_classes = self.head.num_classes
        self.loss_weight = self.head.loss_weight

    def forward(self, features: list[torch.Tensor], prev_output: HeadOutput | None = None) -> HeadOutput:
        return self.head(features, prev_output)
