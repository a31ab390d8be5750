"""The data types that cross component boundaries.

Every component kind in :mod:`zoo_core.hookspecs` is described in terms of these types.
They are deliberately small: tensors plus the few facts a consumer needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import torch

__all__ = [
    "IGNORE_INDEX",
    "MaskClassification",
    "HeadOutput",
    "pixel_scores",
    "read_class_stats",
    "LossContext",
    "BindContext",
    "Backbone",
    "Head",
    "Loss",
    "Remapper",
    "PredictFn",
    "TTAPolicy",
    "Ensembler",
]

IGNORE_INDEX = 255
"""Target value that every loss and metric ignores (VSPW void and "others")."""


@dataclass
class MaskClassification:
    """Output of a mask-classification head (MaskFormer style).

    ``class_logits`` is ``(N, Q, C + 1)``: per query, C classes plus "no object" last.
    ``mask_logits`` is ``(N, Q, h, w)``. ``aux`` holds the same pair for intermediate
    decoder layers, for losses that supervise them.
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    aux: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def to_scores(self, size: Sequence[int] | None = None) -> torch.Tensor:
        """Per-pixel class scores ``(N, C, h, w)``: the semantic inference of MaskFormer.

        ``sum_q softmax(class)[q, c] * sigmoid(mask)[q]``; the "no object" column is dropped.
        At the masks' resolution, or at ``size=(H, W)``: the mask logits are then interpolated
        (bilinear, ``align_corners=False``) to ``size`` before the sigmoid, as MaskFormer does.
        """
        cls = self.class_logits.float().softmax(-1)[..., :-1]
        mask_logits = self.mask_logits.float()
        if size is not None and tuple(mask_logits.shape[-2:]) != tuple(size):
            mask_logits = torch.nn.functional.interpolate(
                mask_logits, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False
            )
        return torch.einsum("nqc,nqhw->nchw", cls, mask_logits.sigmoid())


HeadOutput = Union[torch.Tensor, MaskClassification]  # noqa: UP007 (a runtime alias: `|` needs Python 3.10 types)
"""What a head returns: per-pixel logits ``(N, C, h, w)`` or a :class:`MaskClassification`."""


def pixel_scores(output: HeadOutput) -> torch.Tensor:
    """Per-pixel class scores ``(N, C, h, w)`` from any head output.

    For plain heads these are the logits themselves; for mask classification they are
    already probabilities-like scores (see :meth:`MaskClassification.to_scores`).
    """
    if isinstance(output, MaskClassification):
        return output.to_scores()
    return output


def read_class_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The class statistics ``zoo data stats`` writes (``stats.json``), checked field by field.

    ``num_classes``, ``class_names``, ``pixel_counts``, ``frame_counts``, ``video_counts``
    (int64 arrays), ``priors`` (a float64 array: pixel counts over labelled pixels) and
    ``labelled_pixels``. A missing or malformed file raises a
    :class:`~zoo_core.errors.DataError` naming the file and the field.
    """
    from .class_stats import read_stats

    return read_stats(path)


@dataclass
class LossContext:
    """What a loss may need besides the head output and the target.

    Static context (class pixel statistics, a saved confusion matrix) is given to the
    loss factory as arguments when the loss is built; this object carries what changes
    per step. A loss that needs a frozen teacher's output declares
    ``needs_teacher = True`` as a class attribute and names the teacher (a card or a model
    directory) in its ``teacher`` attribute; the engine fills ``teacher`` with that model's
    last head's output on ``images``, without a graph.
    """

    images: torch.Tensor | None = None
    iteration: int = 0
    max_iters: int = 0
    head_index: int = 0
    teacher: HeadOutput | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BindContext:
    """What the core tells a built component about the pipeline before any model loads.

    A TTA policy, ensembler or loss may define ``bind(self, context: BindContext) -> None``.
    The core calls it once, right after building the component and before loading any
    weights (``zoo run``: also for a one-model pipeline, whose ensembler is otherwise never
    called; ``zoo train``: for the loss, before the model is built). ``bind`` checks the
    component's arguments against the pipeline and raises
    :class:`~zoo_core.errors.ConfigError` saying what to change; any exception it raises is
    reported as one line naming the component, and nothing is written to ``--out``.

    ``model_names`` are the pipeline's ``models`` in order (empty in ``zoo train``);
    ``class_names`` and ``num_classes`` those of the models (``zoo run``: read from the
    first model's ``config.json``, which the core checks the other models agree with) or of
    the model being trained; ``kind`` and ``where`` are the component's kind and YAML path
    (``"ensembler"``, ``"ensemble"``; ``"tta"``, ``"models[1].tta"``; ``"loss"``, ``"train.loss"``).
    ``model_dirs`` are the models' resolved directories (``config.json`` + weights), in the
    order of ``model_names`` (empty in ``zoo train``), for a component that checks files
    recorded for a model against its weights (``hierarchical``'s ``rank_by`` runs do).
    """

    model_names: tuple[str, ...]
    class_names: tuple[str, ...]
    num_classes: int
    device: torch.device = torch.device("cpu")
    kind: str = ""
    where: str = ""
    model_dirs: tuple[Path, ...] = ()


@runtime_checkable
class Backbone(Protocol):
    """``images (N, 3, H, W) -> list of NCHW feature maps`` (an ``nn.Module``).

    ``channels[i]`` and ``strides[i]`` describe the i-th map. The backbone accepts any
    ``H, W`` (it pads internally if it needs multiples of its stride) and returns maps of
    size ``ceil(H / stride), ceil(W / stride)``.
    """

    channels: Sequence[int]
    strides: Sequence[int]

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]: ...


@runtime_checkable
class Head(Protocol):
    """``(features, prev_output) -> HeadOutput`` (an ``nn.Module``).

    ``features`` is the backbone's whole list; the head picks what it uses. ``prev_output``
    is the previous head's output in a cascade (``None`` for the first head): OCR uses the
    FCN logits as soft object regions. ``num_classes`` and ``loss_weight`` are attributes.
    """

    num_classes: int
    loss_weight: float

    def __call__(self, features: list[torch.Tensor], prev_output: HeadOutput | None) -> HeadOutput: ...


class Loss(Protocol):
    """``(output, target, context) -> scalar tensor``.

    ``output`` is a head's raw output (logits at the head's resolution, or a
    :class:`MaskClassification`); ``target`` is ``(N, H, W)`` int64 train ids with
    :data:`IGNORE_INDEX` for void, at image resolution. The loss resizes as it sees fit.
    Optional: ``bind(context)`` (see :class:`BindContext`), called before the model is built.
    """

    def __call__(self, output: HeadOutput, target: torch.Tensor, context: LossContext) -> torch.Tensor: ...


class Remapper(Protocol):
    """A source dataset's label map -> VSPW train ids.

    ``lut`` is a ``uint8`` array of 256 entries (source value -> train id or 255);
    ``__call__(mask)`` applies it; ``keep(mask)`` is the dataset filter (for example at
    least 80% of pixels labelled after remapping); ``source_classes`` names the source ids.
    """

    lut: Any
    source_classes: Sequence[str]

    def __call__(self, mask: Any) -> Any: ...

    def keep(self, remapped_mask: Any) -> bool: ...


PredictFn = Callable[..., torch.Tensor]
"""``predict(images (N, 3, H, W), size=None, add_to=None) -> class probabilities (N, C, *size)``.

``size=(H', W')`` asks for the probabilities at that size, interpolated once from the
model's own output resolution (logits interpolated, then softmax), which is cheaper and
sharper than resizing the probabilities at the input's size; ``None`` means the input's
size. ``add_to`` (a float32 running sum of the result's shape) has the probabilities added
to it in place and is returned, so no view is allocated whole. Otherwise the result is a new
tensor, the caller's to update in place. The ``predict`` the core gives a policy takes both
keywords; a single-argument ``predict(images)`` (a test's fake model) is still a valid
PredictFn: a policy that passes them checks first that ``predict`` accepts them (the built-in
ones do, and otherwise resize and add the results themselves).
"""


class TTAPolicy(Protocol):
    """``(predict, images) -> class probabilities (N, C, H, W)`` at the images' size.

    A policy calls ``predict`` on transformed copies of the batch (flipped, rescaled, or a
    batch of several views of N images each), maps each result back to the original
    geometry and averages; it may pass ``size=(H, W)`` to get a rescaled view's
    probabilities straight at the images' size (see :data:`PredictFn`). It accumulates a
    running sum rather than stacking, so memory does not grow with the number of views.
    Optional: ``bind(context)`` (see :class:`BindContext`), called before any model loads.
    """

    def __call__(self, predict: PredictFn, images: torch.Tensor) -> torch.Tensor: ...


class Ensembler(Protocol):
    """Per-model probabilities of one frame -> one probability map.

    Called once per frame (a stream: nothing is kept between calls unless the ensembler
    chooses to). ``per_model`` maps each pipeline model's name to its ``(N, C, H, W)``
    probabilities, in the pipeline's model order. The result is ``(N, C, H, W)``; it need
    not sum to one, since only its argmax is used downstream. Optional: ``bind(context)``
    (see :class:`BindContext`), called before any model loads: check model names given in
    the arguments against ``context.model_names`` there.
    """

    def __call__(self, per_model: Mapping[str, torch.Tensor]) -> torch.Tensor: ...
