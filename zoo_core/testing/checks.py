"""Conformance checks: does a component keep the contract of its kind (:mod:`zoo_core.hookspecs`)?

One check per kind: :func:`check_backbone`, :func:`check_head`, :func:`check_loss`,
:func:`check_remapper`, :func:`check_tta`, :func:`check_ensembler`. Each builds the
component with ``factory(**args)``, runs it on tiny synthetic inputs (odd sizes; a batch of 2
at the first size, of 1 at the others) and raises :class:`ConformanceError` saying in words what broke; when everything
holds it returns a :class:`CheckReport` listing what was checked.

The keyword-only options of a check (``name``, ``device``, ``sizes``, ...) are not passed
to the factory; to give the factory an argument of the same name, bind it with
``functools.partial(factory, name=...)``.
"""

from __future__ import annotations

import functools
import gc
import inspect
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from ..data.classes import NUM_CLASSES
from ..errors import ZooError
from ..interfaces import IGNORE_INDEX, BindContext, LossContext, MaskClassification
from ..runtime import AMP_DTYPES, autocast

Size = tuple[int, int]
DEFAULT_SIZES: tuple[Size, ...] = ((64, 96), (50, 77), (33, 65))
"""Input sizes every check of an image component runs: a multiple of 32, and two odd sizes."""

# Feature pyramid a head is checked on, unless the check is given in_channels / in_strides.
DEFAULT_HEAD_CHANNELS = (8, 16, 24, 32)
DEFAULT_HEAD_STRIDES = (4, 8, 16, 32)
DEFAULT_NUM_CLASSES = 5
DEFAULT_MODEL_NAMES = ("model-a", "model-b")

# A TTA policy given a prediction that follows the image pixel by pixel must give it back: exactly for flips, up
# to resampling blur for rescaled views. Mean absolute difference measured: the built-ins 0.0006 (multi-scale),
# 0.01 (resize-flip down to 8x8); a mirrored view not flipped back 0.135, a vertical mirror not flipped back 0.087.
TTA_GEOMETRY_TOLERANCE = 0.03
# Averaged probabilities sum to one per pixel up to float32 rounding.
PROBABILITY_SUM_TOLERANCE = 1e-4
# How many results of ``predict`` a TTA policy may still hold when it calls ``predict`` again: a running sum
# holds at most one (the view before its mirror); a policy that collects every view before averaging holds them all.
MAX_LIVE_VIEWS = 2


class ConformanceError(AssertionError):
    """A component breaks the contract of its kind; the message says what broke.

    An :class:`AssertionError`, so pytest shows it as a failed assertion; deliberately not a
    :class:`~zoo_core.errors.ZooError`: it reports a bug in the component, not an input a user can fix.
    """


@dataclass
class CheckReport:
    """What a check verified of one component, one line per property."""

    kind: str
    name: str
    checked: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = "".join(f"\n  - {line}" for line in self.checked)
        return f"{self.kind} {self.name!r} keeps the contract ({len(self.checked)} checks):{lines}"


class _Check:
    """The kind and name a message starts with, and the report being filled."""

    def __init__(self, kind: str, factory: Callable[..., Any], name: str | None):
        self.kind = kind
        self.name = name or getattr(factory, "__name__", None) or type(factory).__name__
        self.report = CheckReport(kind, self.name)

    def fail(self, message: str, cause: BaseException | None = None) -> NoReturn:
        raise ConformanceError(f"{self.kind} {self.name!r}: {message}") from cause

    def ensure(self, condition: Any, message: str) -> None:
        if not condition:
            self.fail(message)

    def passed(self, line: str) -> None:
        self.report.checked.append(line)

    def build(self, factory: Callable[..., Any], args: dict[str, Any]) -> Any:
        try:
            return factory(**args)
        except Exception as exc:
            self.fail(
                f"its factory raised {_exception(exc)} when called with {args}; "
                "give the check arguments the factory accepts",
                exc,
            )

    def call(self, what: str, fn: Callable[..., Any], *call_args: Any) -> Any:
        """``fn(*call_args)`` on valid input: any exception is a broken contract, named in the message."""
        try:
            return fn(*call_args)
        except ConformanceError:
            raise
        except Exception as exc:
            self.fail(f"raised {_exception(exc)} on valid input ({what})", exc)

    def refuses_cleanly(self, what: str, fn: Callable[..., Any], *call_args: Any) -> bool:
        """``fn(*call_args)`` on bad input: it may refuse, but only with a ZooError. True if it refused."""
        try:
            fn(*call_args)
        except ZooError:
            return True
        except ConformanceError:
            raise
        except Exception as exc:
            self.fail(
                f"raised {_exception(exc)} instead of a zoo_core.errors.ZooError for {what}; raise "
                "ConfigError or DataError with a message that says what to do",
                exc,
            )
        return False

    def bind(self, component: Any, context: BindContext) -> bool:
        """``component.bind(context)`` if it has one, as the core calls it before any model loads. True if bound."""
        if not callable(getattr(component, "bind", None)):
            return False
        what = f"bind() with models {list(context.model_names)} and {context.num_classes} classes"
        self.call(what, component.bind, context)
        self.passed(f"{what}: accepted")
        return True

    def unchanged(self, label: str, before: Any, after: Any, when: str) -> None:
        if not _same(before, after):
            self.fail(f"modified its `{label}` in place ({when}); work on a copy")


def _bind_context(kind: str, where: str, model_names: Sequence[str], num_classes: int, device: Any) -> BindContext:
    """What the core tells a component about the pipeline (class names are made up)."""
    classes = tuple(f"class-{i}" for i in range(num_classes))
    return BindContext(tuple(model_names), classes, num_classes, torch.device(device), kind=kind, where=where)


def _exception(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _same(before: Any, after: Any) -> bool:
    if isinstance(before, torch.Tensor):
        return before.shape == after.shape and bool(torch.equal(before, after))
    if isinstance(before, np.ndarray):
        return before.shape == after.shape and bool(np.array_equal(before, after))
    if isinstance(before, (list, tuple)):
        return len(before) == len(after) and all(_same(b, a) for b, a in zip(before, after))
    if isinstance(before, Mapping):
        return list(before) == list(after) and all(_same(before[k], after[k]) for k in before)
    if isinstance(before, MaskClassification):
        return _same(before.class_logits, after.class_logits) and _same(before.mask_logits, after.mask_logits)
    return before == after


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, MaskClassification):
        return MaskClassification(_copy(value.class_logits), _copy(value.mask_logits))
    return value


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if hasattr(t, "shape") else type(t).__name__


def _size(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def _accepts(factory: Callable[..., Any], key: str) -> bool:
    """Whether the factory takes ``key`` (by name or ``**kwargs``): what the core's builder injects it by."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _injected(factory: Callable[..., Any], args: dict[str, Any], **injected: Any) -> dict[str, Any]:
    args = dict(args)
    for key, value in injected.items():
        if _accepts(factory, key):
            args.setdefault(key, value)
    return args


def _batches(sizes: Sequence[Size]) -> list[tuple[int, Size]]:
    """``(batch, size)`` to run: a batch of 2 at the first size, a batch of 1 at the others (or at the only one)."""
    sizes = [(int(h), int(w)) for h, w in sizes]
    if not sizes:
        raise ValueError("sizes must list at least one (height, width)")
    return [(2, sizes[0])] + [(1, size) for size in sizes[1:] or sizes]


def _sizes_text(batches: list[tuple[int, Size]]) -> str:
    return ", ".join(dict.fromkeys(_size(size) for _, size in batches))


def _randn(generator: torch.Generator, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator).to(device)


def _amp_dtype(amp: str | None) -> torch.dtype | None:
    if amp is None or amp == "none":
        return None
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of: none, {', '.join(AMP_DTYPES)}; got {amp!r}")
    return AMP_DTYPES[amp]


def _check_gradients(check: _Check, module: nn.Module, when: str) -> int:
    """Every trainable parameter got a finite gradient (DDP needs one for each), some of it non-zero."""
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not trainable:
        return 0
    missing = [n for n, p in trainable if p.grad is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        check.fail(
            f"no gradient reached {len(missing)} of its {len(trainable)} trainable parameters ({when}): "
            f"{shown}; an unused parameter breaks distributed training: remove it, or freeze it "
            "(requires_grad=False)"
        )
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    if bad:
        check.fail(f"the gradient of {', '.join(bad[:5])} is not finite ({when})")
    if not any(p.grad.abs().sum() > 0 for _, p in trainable):
        check.fail(f"the gradient of every parameter is zero ({when}); is the output detached from them?")
    return len(trainable)


# -- backbone -------------------------------------------------------------------------


def check_backbone(
    factory: Callable[..., Any],
    *,
    name: str | None = None,
    sizes: Sequence[Size] = DEFAULT_SIZES,
    device: str | torch.device = "cpu",
    amp: str | None = None,
    **args: Any,
) -> CheckReport:
    """Check the backbone ``factory(**args)`` against the contract of :func:`zoo_core.hookspecs.zoo_backbones`.

    Asserts: it is an ``nn.Module`` with ``channels`` and ``strides``, equally long lists of
    positive ints; in eval mode, for every size of ``sizes`` (a batch of 2 at the first,
    of 1 at the others) float32 images on ``device`` give a list of one float32 NCHW map per entry, of
    ``(N, channels[i], ceil(H / strides[i]), ceil(W / strides[i]))``, finite, on ``device``;
    the same in train mode, where a backward pass reaches every trainable parameter (an
    unused one breaks distributed training) with a finite gradient; the images are never
    modified in place. With ``amp`` (``bf16`` or ``fp16``) one more eval pass runs under
    autocast and must give finite maps of the same shapes (any float dtype).
    """
    check = _Check("backbone", factory, name)
    device = torch.device(device)
    amp_dtype = _amp_dtype(amp)
    backbone = check.build(factory, args)
    check.ensure(
        isinstance(backbone, nn.Module), f"the factory returned a {type(backbone).__name__}, not a torch.nn.Module"
    )
    channels = _positive_ints(check, backbone, "channels")
    strides = _positive_ints(check, backbone, "strides")
    check.ensure(
        len(channels) == len(strides),
        f"has {len(channels)} channels {channels} but {len(strides)} "
        f"strides {strides}; give one of each per feature map",
    )
    check.passed(f"nn.Module with channels {channels} and strides {strides}, one of each per map")

    backbone.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    batches = _batches(sizes)
    with torch.no_grad():
        for batch, size in batches:
            images = _randn(generator, (batch, 3, *size), device)
            _backbone_pass(check, backbone, images, channels, strides, "in eval mode")
    shown = _sizes_text(batches)
    check.passed(
        f"eval mode: maps of (N, channels[i], ceil(H/stride), ceil(W/stride)) for inputs {shown}, "
        "batches of 1 and 2, float32 and finite, images unchanged"
    )

    backbone.train()
    images = _randn(generator, (2, 3, *batches[0][1]), device)
    outputs = _backbone_pass(check, backbone, images, channels, strides, "in train mode")
    weights = [torch.randn(o.shape, generator=generator).to(device) for o in outputs]
    loss = sum((o.float() * w).mean() for o, w in zip(outputs, weights))
    check.call("backward pass in train mode", loss.backward)
    count = _check_gradients(check, backbone, "backward pass in train mode")
    check.passed(f"train mode: same shapes; a backward pass reaches all {count} trainable parameters")

    if amp_dtype is not None:
        backbone.eval()
        images = _randn(generator, (1, 3, *batches[1][1]), device)
        with torch.no_grad(), autocast(device, amp):
            _backbone_pass(
                check, backbone, images, channels, strides, f"in eval mode under autocast {amp}", float32=False
            )
        check.passed(f"autocast {amp}: same shapes, finite")
    return check.report


def _positive_ints(check: _Check, component: Any, attribute: str) -> list[int]:
    values = getattr(component, attribute, None)
    if values is None:
        check.fail(f"has no attribute `{attribute}`; set it to a list with one entry per feature map")
    try:
        values = list(values)
    except TypeError:
        check.fail(f"`{attribute}` is {values!r}, not a list with one entry per feature map")
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        check.fail(f"`{attribute}` is {values!r}; it must be a non-empty list of positive ints")
    return values


def _backbone_pass(
    check: _Check,
    backbone: nn.Module,
    images: torch.Tensor,
    channels: list[int],
    strides: list[int],
    mode: str,
    float32: bool = True,
) -> list[torch.Tensor]:
    n, _, height, width = images.shape
    before = _copy(images)
    where = f"images {_shape(images)} {mode}"
    outputs = check.call(where, backbone, images)
    check.unchanged("images", before, images, where)
    if not isinstance(outputs, (list, tuple)) or not all(isinstance(o, torch.Tensor) for o in outputs):
        check.fail(f"returned a {type(outputs).__name__} for {where}; return a list of NCHW tensors")
    check.ensure(
        len(outputs) == len(channels),
        f"returned {len(outputs)} maps for {where}, but its channels and strides describe {len(channels)}",
    )
    for i, (output, c, stride) in enumerate(zip(outputs, channels, strides)):
        expected = (n, c, math.ceil(height / stride), math.ceil(width / stride))
        if tuple(output.shape) != expected:
            check.fail(
                f"output {i} has shape {_shape(output)}, expected {expected} = ceil({height}/{stride}) x "
                f"ceil({width}/{stride}) for input {height}x{width} (batch {n}, {c} channels) {mode}; "
                "pad inside forward and crop the maps back"
            )
        if float32 and output.dtype != torch.float32:
            check.fail(f"output {i} is {output.dtype} for float32 {where}; return float32 outside autocast")
        check.ensure(output.is_floating_point(), f"output {i} is {output.dtype} for {where}")
        check.ensure(
            output.device == images.device, f"output {i} is on {output.device}, the images on {images.device} ({where})"
        )
        check.ensure(torch.isfinite(output).all(), f"output {i} holds NaN or inf for {where}")
    return list(outputs)


# -- head -----------------------------------------------------------------------------


def check_head(
    factory: Callable[..., Any],
    *,
    name: str | None = None,
    in_channels: Sequence[int] | None = None,
    in_strides: Sequence[int] | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    sizes: Sequence[Size] = DEFAULT_SIZES,
    device: str | torch.device = "cpu",
    amp: str | None = None,
    **args: Any,
) -> CheckReport:
    """Check the head ``factory(**args)`` against the contract of :func:`zoo_core.hookspecs.zoo_heads`.

    As the core's builder does, the factory is given ``in_channels``, ``in_strides`` (default:
    a pyramid of channels 8, 16, 24, 32 at strides 4, 8, 16, 32) and ``num_classes`` when
    its signature takes them. The head gets random features shaped like a backbone's
    (``ceil(H / stride)`` maps) for every size of ``sizes``.

    Asserts: an ``nn.Module`` with ``num_classes`` equal to the one given and a finite
    number ``loss_weight``; ``head(features, None)`` and ``head(features, logits of a previous
    head)`` return float32, finite logits ``(N, num_classes, h, w)`` (the resolution ``h, w``
    is the head's choice: the segmentor and the losses resize), or a
    :class:`~zoo_core.interfaces.MaskClassification` with class logits ``(N, Q,
    num_classes + 1)`` and mask logits ``(N, Q, h, w)``; a head that needs a previous head
    (the built-in ``ocr``) may refuse ``None``, with a :class:`~zoo_core.errors.ZooError`;
    features and previous output are never modified in place; in train mode a backward pass
    reaches every trainable parameter and the features (the backbone trains through the
    head). With ``amp`` one more pass runs under autocast.
    """
    check = _Check("head", factory, name)
    device = torch.device(device)
    amp_dtype = _amp_dtype(amp)
    in_channels = list(DEFAULT_HEAD_CHANNELS if in_channels is None else in_channels)
    in_strides = list(DEFAULT_HEAD_STRIDES if in_strides is None else in_strides)
    if len(in_channels) != len(in_strides):
        raise ValueError(f"in_channels {in_channels} and in_strides {in_strides} must have the same length")
    args = _injected(factory, args, in_channels=in_channels, in_strides=in_strides, num_classes=num_classes)
    head = check.build(factory, args)
    check.ensure(isinstance(head, nn.Module), f"the factory returned a {type(head).__name__}, not a torch.nn.Module")
    check.ensure(
        getattr(head, "num_classes", None) == num_classes,
        f"has num_classes {getattr(head, 'num_classes', '(missing)')!r}, but was built for {num_classes}",
    )
    loss_weight = getattr(head, "loss_weight", None)
    check.ensure(
        isinstance(loss_weight, (int, float)) and not isinstance(loss_weight, bool) and math.isfinite(loss_weight),
        f"has loss_weight {loss_weight!r}; it must be a number (the weight of this head's loss)",
    )
    check.passed(f"nn.Module with num_classes {num_classes} and loss_weight {loss_weight}")

    head.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    pyramid = _Pyramid(in_channels, in_strides, num_classes, generator, device)
    batches = _batches(sizes)
    needs_previous = False
    with torch.no_grad():
        for index, (batch, size) in enumerate(batches):
            features = pyramid.features(batch, size)
            if not needs_previous:
                # A head that needs a previous head's output (ocr) may refuse None, with a ZooError.
                output = _head_pass(
                    check, head, features, None, size, num_classes, "in eval mode", may_refuse=index == 0
                )
                needs_previous = output is None
            _head_pass(check, head, features, pyramid.previous(batch, size), size, num_classes, "in eval mode")
    shown = _sizes_text(batches)
    given = "a previous head's logits" if needs_previous else "prev_output None and a previous head's logits"
    check.passed(
        f"eval mode: {given} give outputs of {num_classes} classes, float32, finite, for inputs {shown}, "
        "batches of 1 and 2; features unchanged"
    )
    if needs_previous:
        check.passed("prev_output None is refused with a ZooError (the head needs a previous head)")

    head.train()
    size = batches[0][1]
    features = [f.requires_grad_(True) for f in pyramid.features(2, size)]
    output = _head_pass(check, head, features, pyramid.previous(2, size), size, num_classes, "in train mode")
    loss = sum((t.float() * torch.randn(t.shape, generator=generator).to(device)).mean() for t in _tensors(output))
    check.call("backward pass in train mode", loss.backward)
    count = _check_gradients(check, head, "backward pass in train mode")
    check.ensure(
        any(f.grad is not None and f.grad.abs().sum() > 0 for f in features),
        "no gradient reached the features in train mode: the backbone would not train through this head",
    )
    check.passed(f"train mode: a backward pass reaches all {count} trainable parameters and the features")

    if amp_dtype is not None:
        head.eval()
        features = pyramid.features(1, batches[1][1])
        with torch.no_grad(), autocast(device, amp):
            _head_pass(
                check,
                head,
                features,
                pyramid.previous(1, batches[1][1]),
                batches[1][1],
                num_classes,
                f"in eval mode under autocast {amp}",
                float32=False,
            )
        check.passed(f"autocast {amp}: same shapes, finite")
    return check.report


@dataclass
class _Pyramid:
    channels: list[int]
    strides: list[int]
    num_classes: int
    generator: torch.Generator
    device: torch.device

    def features(self, batch: int, size: Size) -> list[torch.Tensor]:
        return [
            _randn(self.generator, (batch, c, math.ceil(size[0] / s), math.ceil(size[1] / s)), self.device)
            for c, s in zip(self.channels, self.strides)
        ]

    def previous(self, batch: int, size: Size) -> torch.Tensor:
        """Logits of a previous head (an auxiliary FCN) at the finest map's resolution."""
        stride = min(self.strides)
        return _randn(
            self.generator,
            (batch, self.num_classes, math.ceil(size[0] / stride), math.ceil(size[1] / stride)),
            self.device,
        )


def _tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor of a head output (for a mask classification, the auxiliary layers' too)."""
    if isinstance(output, MaskClassification):
        return [output.class_logits, output.mask_logits, *(t for layer in output.aux for t in layer.values())]
    return [output]


def _head_pass(
    check: _Check,
    head: nn.Module,
    features: list[torch.Tensor],
    previous: torch.Tensor | None,
    size: Size,
    num_classes: int,
    mode: str,
    float32: bool = True,
    may_refuse: bool = False,
) -> Any:
    """The head's output, checked; ``None`` if ``may_refuse`` and the head refused with a ZooError."""
    n = features[0].shape[0]
    where = (
        f"features {', '.join(_shape(f) for f in features)} of input {_size(size)}, prev_output "
        f"{'None' if previous is None else _shape(previous)}, {mode}"
    )
    before = _copy(features)
    before_previous = _copy(previous)
    output, refused = None, False
    try:
        output = head(features, previous)
    except ZooError as exc:
        if not may_refuse:
            check.fail(f"raised {_exception(exc)} on valid input ({where})", exc)
        refused = True
    except Exception as exc:
        if may_refuse:
            check.fail(
                f"raised {_exception(exc)} instead of a zoo_core.errors.ZooError for {where}; a head that needs "
                "a previous head's output raises ConfigError for prev_output None, saying which head to put first",
                exc,
            )
        check.fail(f"raised {_exception(exc)} on valid input ({where})", exc)
    check.unchanged("features", before, features, where)
    check.unchanged("prev_output", before_previous, previous, where)
    if refused:
        return None
    if isinstance(output, MaskClassification):
        _check_mask_classification(check, output, n, num_classes, where)
    elif isinstance(output, torch.Tensor):
        check.ensure(
            output.dim() == 4 and output.shape[:2] == (n, num_classes) and min(output.shape[2:]) > 0,
            f"returned logits of shape {_shape(output)} for {where}; expected (N, num_classes, h, w) = "
            f"({n}, {num_classes}, h, w)",
        )
    else:
        check.fail(
            f"returned a {type(output).__name__} for {where}; return logits (N, C, h, w) or a "
            "zoo_core.interfaces.MaskClassification"
        )
    for t in _tensors(output):
        if float32 and t.dtype != torch.float32:
            check.fail(f"returned {t.dtype} for float32 {where}; return float32 outside autocast")
        check.ensure(
            t.device == features[0].device, f"returned a tensor on {t.device} for features on {features[0].device}"
        )
        check.ensure(torch.isfinite(t).all(), f"returned NaN or inf for {where}")
    return output


def _check_mask_classification(check: _Check, output: MaskClassification, n: int, num_classes: int, where: str) -> None:
    cls, masks = output.class_logits, output.mask_logits
    check.ensure(
        cls.dim() == 3 and cls.shape[0] == n and cls.shape[2] == num_classes + 1,
        f"returned class_logits of shape {_shape(cls)} for {where}; expected (N, Q, num_classes + 1) = "
        f"({n}, Q, {num_classes + 1}), the last column being 'no object'",
    )
    check.ensure(
        masks.dim() == 4 and masks.shape[:2] == cls.shape[:2] and min(masks.shape[2:]) > 0,
        f"returned mask_logits of shape {_shape(masks)} with class_logits {_shape(cls)} for {where}; "
        "expected (N, Q, h, w) with the same N and Q",
    )
    for i, layer in enumerate(output.aux):
        check.ensure(
            isinstance(layer, Mapping) and all(isinstance(t, torch.Tensor) for t in layer.values()),
            f"aux[{i}] is not a mapping of tensors ({where})",
        )
        for key, reference in (("class_logits", cls), ("mask_logits", masks)):
            if key in layer:
                check.ensure(
                    layer[key].shape[:2] == reference.shape[:2] and layer[key].dim() == reference.dim(),
                    f"aux[{i}][{key!r}] has shape {_shape(layer[key])}, the final {key} {_shape(reference)} ({where})",
                )


# -- loss -----------------------------------------------------------------------------


def check_loss(
    factory: Callable[..., Any],
    *,
    name: str | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    size: Size = (33, 50),
    mask_classification: bool = False,
    device: str | torch.device = "cpu",
    amp: str | None = None,
    **args: Any,
) -> CheckReport:
    """Check the loss ``factory(**args)`` against the contract of :func:`zoo_core.hookspecs.zoo_losses`.

    As the core's builder does, the factory is given ``num_classes`` when its signature
    takes it. The loss is called as ``loss(output, target, context)`` with targets
    ``(2, *size)`` of ids ``0..num_classes-1`` and some 255, and with logits both at the
    target's size and at a quarter of it (the loss resizes, as the contract says); with
    ``mask_classification=True`` the outputs are
    :class:`~zoo_core.interfaces.MaskClassification` instead. A loss with
    ``needs_teacher = True`` gets a teacher output in ``context.teacher``. A loss with
    ``bind(context)`` is bound first, as ``zoo train`` does (no model names, ``num_classes``
    class names).

    Asserts: a 0-dim, float, finite tensor that back-propagates a finite, non-zero gradient to
    the output; output, target and context are not modified in place; pixels labelled 255
    are ignored (with one labelled pixel, changing the logits of all the others leaves the
    loss unchanged, up to 1e-5 relative; skipped for mask classification, whose set
    criteria may treat void as background of every mask); a target with every pixel 255
    gives a finite loss that still has a graph (the built-ins give 0); a target id of
    ``num_classes`` or more is refused with a :class:`~zoo_core.errors.ZooError` (the
    built-ins raise ``DataError``), not an ``IndexError`` or a silent result. With ``amp``,
    bf16/fp16 logits under autocast give a finite loss.
    """
    check = _Check("loss", factory, name)
    device = torch.device(device)
    amp_dtype = _amp_dtype(amp)
    loss_fn = check.build(factory, _injected(factory, args, num_classes=num_classes))
    check.ensure(callable(loss_fn), f"the factory returned a {type(loss_fn).__name__}, which is not callable")
    check.bind(loss_fn, _bind_context("loss", "train.loss", (), num_classes, device))  # zoo train has no model names
    generator = torch.Generator().manual_seed(0)
    height, width = size
    low = (math.ceil(height / 4), math.ceil(width / 4))
    kind = "mask-classification outputs" if mask_classification else "logits"

    def output(at: Size, batch: int = 2, dtype: torch.dtype = torch.float32) -> Any:
        if mask_classification:
            return MaskClassification(
                _randn(generator, (batch, 3, num_classes + 1), device).to(dtype).requires_grad_(True),
                _randn(generator, (batch, 3, *at), device).to(dtype).requires_grad_(True),
            )
        return _randn(generator, (batch, num_classes, *at), device).to(dtype).requires_grad_(True)

    def target(batch: int = 2) -> torch.Tensor:
        ids = torch.randint(0, num_classes, (batch, height, width), generator=generator)
        void = torch.rand((batch, height, width), generator=generator) < 0.2
        return ids.masked_fill(void, IGNORE_INDEX).to(device)

    def context(batch: int = 2) -> LossContext:
        teacher = None
        if getattr(loss_fn, "needs_teacher", False):  # a frozen teacher's output: no graph
            teacher = _copy(output(low, batch))
        return LossContext(
            images=_randn(generator, (batch, 3, height, width), device), iteration=1, max_iters=10, teacher=teacher
        )

    for at in ((height, width), low):
        out, tgt, ctx = output(at), target(), context()
        where = f"{kind} {', '.join(_shape(t) for t in _tensors(out))} and target {_shape(tgt)}"
        value = _loss_pass(check, loss_fn, out, tgt, ctx, where)
        check.ensure(value.requires_grad, f"returned a loss without a graph for {where}; it cannot train the head")
        check.call(f"backward pass of the loss for {where}", value.backward)
        grads = [t.grad for t in _tensors(out)]
        check.ensure(all(g is None or torch.isfinite(g).all() for g in grads), f"the gradient is not finite ({where})")
        check.ensure(
            any(g is not None and g.abs().sum() > 0 for g in grads),
            f"no gradient reaches the output ({where}); is the loss detached from it?",
        )
    check.passed(
        f"0-dim finite loss, non-zero finite gradient, for {kind} at the target's size {_size(size)} and "
        f"at {_size(low)}; output, target and context unchanged"
    )

    if not mask_classification:
        tgt = torch.full((1, height, width), IGNORE_INDEX, dtype=torch.long, device=device)
        tgt[0, height // 2, width // 3] = num_classes - 1
        out = output((height, width), batch=1).detach()
        changed = out.clone()
        void = (tgt == IGNORE_INDEX).unsqueeze(1).expand_as(out)
        changed[void] = torch.randn(int(void.sum()), generator=generator).to(device) * 10
        where = f"a target with one labelled pixel, {kind} {_shape(out)}"
        same = context(1)  # one teacher output for both calls: only the logits at the 255 pixels differ
        first = _loss_pass(check, loss_fn, out, tgt, same, where)
        second = _loss_pass(check, loss_fn, changed, tgt, same, where + ", other logits at the 255 pixels")
        if not torch.allclose(first.detach().float(), second.detach().float(), rtol=1e-5, atol=1e-6):
            check.fail(
                f"does not ignore pixels labelled {IGNORE_INDEX}: with one labelled pixel, changing the logits "
                f"of the others changed the loss from {first.item():.6g} to {second.item():.6g}"
            )
        check.passed(f"pixels labelled {IGNORE_INDEX} are ignored")

    void_target = torch.full((2, height, width), IGNORE_INDEX, dtype=torch.long, device=device)
    where = f"a target with every pixel {IGNORE_INDEX}"
    value = _loss_pass(check, loss_fn, output(low), void_target, context(), where)
    check.ensure(
        value.requires_grad,
        f"returned a loss without a graph for {where}; return 0 with a graph "
        "(for example output.sum() * 0) so that the training step still runs",
    )
    check.passed(f"a target with every pixel {IGNORE_INDEX} gives {value.item():.4g}, finite, with a graph")

    bad = target()
    bad[0, 0, 0] = num_classes
    what = f"a target holding id {num_classes} with {num_classes} classes"
    if not check.refuses_cleanly(what, loss_fn, output(low), bad, context()):
        check.fail(
            f"returned a loss for {what} instead of raising a zoo_core.errors.ZooError (DataError) that "
            "names the bad ids"
        )
    check.passed("a target id >= num_classes is refused with a ZooError")

    if amp_dtype is not None:
        out = output(low, dtype=amp_dtype)
        with autocast(device, amp):
            value = _loss_pass(check, loss_fn, out, target(), context(), f"{amp} {kind} under autocast")
        check.passed(f"autocast {amp}: finite loss")
    return check.report


def _loss_pass(
    check: _Check, loss_fn: Any, output: Any, target: torch.Tensor, context: LossContext, where: str
) -> torch.Tensor:
    before = (_copy(output), _copy(target), _copy(context.images))
    value = check.call(where, loss_fn, output, target, context)
    check.unchanged("output", before[0], output, where)
    check.unchanged("target", before[1], target, where)
    check.unchanged("context.images", before[2], context.images, where)
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        check.fail(
            f"returned {_shape(value) if isinstance(value, torch.Tensor) else type(value).__name__} for "
            f"{where}; return a 0-dim tensor"
        )
    check.ensure(value.is_floating_point(), f"returned a {value.dtype} loss for {where}")
    check.ensure(torch.isfinite(value), f"returned {value.item()} for {where}")
    return value


# -- remapper -------------------------------------------------------------------------


def check_remapper(
    factory: Callable[..., Any], *, name: str | None = None, num_classes: int = NUM_CLASSES, **args: Any
) -> CheckReport:
    """Check the remapper ``factory(**args)`` against the contract of :func:`zoo_core.hookspecs.zoo_remappers`.

    Asserts: ``lut`` is 256 ``uint8`` values (numpy array or tensor), each a train id
    ``0..num_classes-1`` (VSPW: 0..123) or 255; ``source_classes`` is a list of str;
    ``remapper(mask)`` equals ``lut[mask]`` for a ``uint8`` numpy array and a ``uint8`` torch
    tensor (the built-ins take both), returning the same kind with the same shape;
    ``keep(remapped)`` returns a bool for a fully labelled and a fully void mask, as a numpy
    array and as a tensor; masks are never modified in place; a 16-bit label map with values
    above 255 is refused with a :class:`~zoo_core.errors.ZooError` (the built-ins raise
    ``DataError``), not wrapped around silently or an ``IndexError``.
    """
    check = _Check("remapper", factory, name)
    remapper = check.build(factory, args)
    lut = getattr(remapper, "lut", None)
    check.ensure(lut is not None, "has no attribute `lut`; set a 256-entry uint8 lookup table")
    lut = lut.detach().cpu().numpy() if isinstance(lut, torch.Tensor) else lut
    check.ensure(isinstance(lut, np.ndarray), f"`lut` is a {type(lut).__name__}; use a numpy uint8 array")
    check.ensure(
        lut.shape == (256,) and lut.dtype == np.uint8,
        f"`lut` has shape {lut.shape} and dtype {lut.dtype}; it must be 256 uint8 values",
    )
    bad = sorted(set(np.unique(lut[(lut >= num_classes) & (lut != IGNORE_INDEX)]).tolist()))
    check.ensure(not bad, f"`lut` maps to {bad[:5]}, outside train ids 0..{num_classes - 1} and {IGNORE_INDEX}")
    check.passed(f"lut: 256 uint8 values, train ids 0..{num_classes - 1} or {IGNORE_INDEX}")
    classes = getattr(remapper, "source_classes", None)
    check.ensure(
        isinstance(classes, Sequence) and not isinstance(classes, str) and all(isinstance(c, str) for c in classes),
        f"`source_classes` is {type(classes).__name__}; it must be a list of the source class names",
    )
    check.passed(f"source_classes: {len(classes)} names")

    rng = np.random.default_rng(0)
    masks = [np.arange(256, dtype=np.uint8).reshape(16, 16), rng.integers(0, 256, (13, 17), dtype=np.uint8)]
    for mask in masks:
        for as_torch in (False, True):
            given = torch.from_numpy(mask.copy()) if as_torch else mask.copy()
            kind = "torch.Tensor" if as_torch else "numpy.ndarray"
            where = f"a uint8 {kind} mask of shape {mask.shape}"
            result = check.call(where, remapper, given)
            check.unchanged("mask", torch.from_numpy(mask) if as_torch else mask, given, where)
            check.ensure(
                isinstance(result, torch.Tensor if as_torch else np.ndarray),
                f"returned a {type(result).__name__} for {where}; return the same kind",
            )
            values = result.cpu().numpy() if as_torch else result
            check.ensure(values.shape == mask.shape, f"returned shape {values.shape} for {where}")
            if not np.array_equal(values, lut[mask]):
                wrong = np.argwhere(values != lut[mask])[0]
                source = int(mask[tuple(wrong)])
                check.fail(
                    f"maps source value {source} to {int(values[tuple(wrong)])} in {where}, but its lut says "
                    f"{int(lut[source])}"
                )
    check.passed("remapper(mask) equals lut[mask] for uint8 numpy arrays and torch tensors, masks unchanged")

    for label, mask in (
        ("fully labelled", np.zeros((8, 8), np.uint8)),
        ("fully void", np.full((8, 8), IGNORE_INDEX, np.uint8)),
    ):
        for as_torch in (False, True):
            given = torch.from_numpy(mask.copy()) if as_torch else mask.copy()
            where = f"keep() of a {label} remapped {'tensor' if as_torch else 'array'}"
            kept = check.call(where, remapper.keep, given)
            check.unchanged("remapped mask", torch.from_numpy(mask) if as_torch else mask, given, where)
            check.ensure(isinstance(kept, (bool, np.bool_)), f"{where} returned a {type(kept).__name__}, not a bool")
    check.passed("keep() returns a bool and leaves the mask unchanged")

    wide = np.array([[0, 1], [300, 1000]], dtype=np.uint16)
    what = "a 16-bit label map with values up to 1000"
    if not check.refuses_cleanly(what, remapper, wide):
        check.fail(
            f"accepted {what} instead of raising a zoo_core.errors.ZooError (DataError) that says the file "
            "is not a label map of this dataset"
        )
    check.passed("values above 255 are refused with a ZooError")
    return check.report


# -- TTA ------------------------------------------------------------------------------


class _RecordingPredict:
    """A fake model's predict function (with ``size`` and ``add_to``, as the core's) recording calls and results."""

    def __init__(self, probabilities: Callable[[torch.Tensor], torch.Tensor]):
        self.probabilities = probabilities
        self.inputs: list[tuple[tuple[int, ...], torch.device, torch.dtype]] = []
        self.problems: list[str] = []  # what was wrong with a call's size or add_to
        self.outputs: list[weakref.ref] = []
        self.max_live = 0

    def __call__(
        self, images: torch.Tensor, size: Sequence[int] | None = None, add_to: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.inputs.append((tuple(images.shape), images.device, images.dtype))
        live = {id(result) for result in (ref() for ref in self.outputs) if result is not None}
        self.max_live = max(self.max_live, len(live))
        probs = self.probabilities(images)
        if size is not None:
            if not (len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
                self.problems.append(f"size={size!r}; pass (height, width) in pixels")
            elif tuple(size) != tuple(probs.shape[-2:]):
                probs = torch.nn.functional.interpolate(probs, size=tuple(size), mode="bilinear", align_corners=False)
        if add_to is not None:  # a running sum the policy keeps: the result is added to it in place
            if add_to.shape != probs.shape:
                self.problems.append(
                    f"an add_to of shape {tuple(add_to.shape)} for a result of shape {tuple(probs.shape)}; pass "
                    "a running sum of the result's shape"
                )
            else:
                probs = add_to.add_(probs)
        self.outputs.append(weakref.ref(probs))
        return probs


def _constant_probabilities(num_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same distribution at every pixel: any flip or resize of it is itself."""
    probs = torch.linspace(1.0, 2.0, num_classes).softmax(0)

    def predict(images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        return probs.to(images.device)[None, :, None, None].expand(n, num_classes, h, w).clone()

    return predict


def _pointwise_probabilities(num_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A softmax of a fixed linear map of each pixel's colour: follows every flip and resize of the image."""
    weights = torch.linspace(-4.0, 4.0, num_classes * 3).reshape(num_classes, 3)

    def predict(images: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kc,nchw->nkhw", weights.to(images.device), images.float()).softmax(1)

    return predict


def _smooth_images(batch: int, size: Size, device: torch.device) -> torch.Tensor:
    """Ramps across and down the image, and their product: smooth, and not symmetric under any flip."""
    height, width = size
    y = torch.linspace(-1.0, 1.0, height)[:, None].expand(height, width)
    x = torch.linspace(-1.0, 1.5, width)[None, :].expand(height, width)
    image = torch.stack([x, y, x * y + 0.5 * x])
    return torch.stack([image * (1 if i % 2 == 0 else -1) for i in range(batch)]).to(device)


def check_tta(
    factory: Callable[..., Any],
    *,
    name: str | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    sizes: Sequence[Size] = DEFAULT_SIZES,
    device: str | torch.device = "cpu",
    **args: Any,
) -> CheckReport:
    """Check the TTA policy ``factory(**args)`` against the contract of :func:`zoo_core.hookspecs.zoo_tta_policies`.

    The policy is called as ``policy(predict, images)`` under ``torch.inference_mode()``, as
    the core calls it, with two fake models: one that predicts the same distribution at
    every pixel, and one whose prediction follows each pixel's colour (so it follows every
    flip and resize of the image), on smooth images. A policy with ``bind(context)`` is bound
    first, to one model of ``num_classes`` classes.

    Asserts, for every size of ``sizes`` (a batch of 2 at the first, of 1 at the others): the
    result is ``(N, C, H, W)`` at the input's size, float, finite, on the input's device; for
    the constant model it equals the model's prediction (up to 1e-5); for the pixel-following
    model it equals ``predict(images)`` up to resampling blur (mean absolute difference below
    :data:`TTA_GEOMETRY_TOLERANCE`: every view is mapped back to the input geometry) and each
    pixel's probabilities sum to 1 (up to :data:`PROBABILITY_SUM_TOLERANCE`: an average);
    ``predict`` (which takes ``size=(h, w)`` and ``add_to``, as the core's does) only gets
    ``(kN, 3, h, w)`` batches of the input's channels, dtype and device, k views of the N
    images at once, and sizes of two positive ints; the images are not modified in place;
    when ``predict`` is called, at most :data:`MAX_LIVE_VIEWS` earlier results are still
    referenced (a running sum, not a stack); after the call nothing of it (images,
    predictions) is kept.
    """
    check = _Check("tta", factory, name)
    device = torch.device(device)
    policy = check.build(factory, args)
    check.ensure(callable(policy), f"the factory returned a {type(policy).__name__}, which is not callable")
    check.bind(policy, _bind_context("tta", "models[0].tta", DEFAULT_MODEL_NAMES[:1], num_classes, device))
    batches = _batches(sizes)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    with torch.inference_mode():
        for batch, size in batches:
            noise = _randn(generator, (batch, 3, *size), device)
            constant = _constant_probabilities(num_classes)
            result = _tta_pass(
                check, policy, constant, noise, num_classes, "a model predicting the same distribution everywhere"
            )
            expected = constant(noise)
            deviation = float((result - expected).abs().max())
            if deviation > 1e-5:
                check.fail(
                    f"changes a prediction that is the same at every pixel (input {_size(size)}, batch "
                    f"{batch}): max difference {deviation:.3g}; divide the running sum by the number of views"
                )

            smooth = _smooth_images(batch, size, device)
            pointwise = _pointwise_probabilities(num_classes)
            result = _tta_pass(check, policy, pointwise, smooth, num_classes, "a model following each pixel")
            error = float((result - pointwise(smooth)).abs().mean())
            worst = max(worst, error)
            if error > TTA_GEOMETRY_TOLERANCE:
                check.fail(
                    f"does not map its views back to the input geometry: with a model whose prediction follows "
                    f"each pixel, the result differs from the prediction of the images by {error:.3f} on "
                    f"average (input {_size(size)}, batch {batch}; at most {TTA_GEOMETRY_TOLERANCE} allowed)"
                )
            sums = result.sum(1)
            off = float((sums - 1).abs().max())
            if off > PROBABILITY_SUM_TOLERANCE:
                check.fail(
                    f"returns probabilities that do not sum to 1 (off by up to {off:.3g}, input {_size(size)}); "
                    "average the views"
                )
    shown = _sizes_text(batches)
    check.passed(f"(N, C, H, W) at the input size for inputs {shown}, batches of 1 and 2; finite, sums to 1")
    check.passed(f"equals the prediction for a constant model; follows the input geometry (mean error {worst:.4f})")
    check.passed(
        f"predict gets (N, 3, h, w) batches; images unchanged; at most {MAX_LIVE_VIEWS} views alive; "
        "nothing kept after the call"
    )
    return check.report


def _tta_pass(
    check: _Check,
    policy: Any,
    probabilities: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    num_classes: int,
    model: str,
) -> torch.Tensor:
    predict = _RecordingPredict(probabilities)
    given = images.clone()  # only the policy and this function hold it: see _check_released
    where = f"images {_shape(images)} and {model}"
    result = check.call(where, policy, predict, given)
    check.unchanged("images", images, given, where)
    check.ensure(predict.inputs, f"never called predict for {where}")
    n, c = images.shape[:2]
    for shape, on, dtype in predict.inputs:
        check.ensure(
            len(shape) == 4 and shape[0] % n == 0 and shape[0] > 0 and shape[1] == c and min(shape[2:]) > 0,
            f"called predict with a batch of shape {shape} for {where}; expected ({n}, {c}, h, w), or k views of "
            f"the {n} images in one batch ({n}k, {c}, h, w)",
        )
        check.ensure(
            on == images.device and dtype == images.dtype,
            f"called predict with a {dtype} batch on {on} for {images.dtype} images on {images.device}",
        )
    if predict.problems:
        check.fail(f"called predict ({where}) with {predict.problems[0]}")
    if predict.max_live > MAX_LIVE_VIEWS:
        check.fail(
            f"keeps {predict.max_live} earlier predictions alive while it calls predict again ({where}); "
            "accumulate a running sum instead of stacking the views"
        )
    expected = (n, num_classes, *images.shape[2:])
    check.ensure(isinstance(result, torch.Tensor), f"returned a {type(result).__name__} for {where}")
    if tuple(result.shape) != expected:
        check.fail(f"returned shape {_shape(result)} for {where}; expected {expected}, the input's size")
    check.ensure(
        result.is_floating_point() and torch.isfinite(result).all(),
        f"returned non-finite or non-float values ({result.dtype}) for {where}",
    )
    check.ensure(result.device == images.device, f"returned a result on {result.device} for images on {images.device}")
    result = result.clone()  # the policy may return one of the predictions itself
    refs = [weakref.ref(given), *predict.outputs]
    del given
    _check_released(check, refs, "its images and predictions", where)
    return result


def _check_released(check: _Check, refs: list[weakref.ref], what: str, where: str) -> None:
    """Once the caller drops a call's inputs, nothing of the call may stay alive: a stream keeps memory flat."""
    live = sum(ref() is not None for ref in refs)
    if live:  # reference counting frees at once; a full collection (slow) only to rule out a cycle
        gc.collect()
        live = sum(ref() is not None for ref in refs)
    if live:
        check.fail(
            f"keeps references to {live} of {what} after the call returned ({where}); keep no more than a "
            "frame's worth of state between calls (frames arrive as a stream)"
        )


# -- ensembler ------------------------------------------------------------------------


def check_ensembler(
    factory: Callable[..., Any],
    *,
    name: str | None = None,
    model_names: Sequence[str] = DEFAULT_MODEL_NAMES,
    num_classes: int = DEFAULT_NUM_CLASSES,
    sizes: Sequence[Size] = DEFAULT_SIZES,
    device: str | torch.device = "cpu",
    per_frame: bool = True,
    **args: Any,
) -> CheckReport:
    """Check the ensembler ``factory(**args)`` against the contract of :func:`zoo_core.hookspecs.zoo_ensemblers`.

    If the ensembler has ``bind(context)``, it is called first with a context of
    ``model_names``, ``num_classes`` class names and ``device``, as the core does before any
    model loads. It is then called under ``torch.inference_mode()`` with ``per_model``: the
    names in order, each with random probabilities ``(N, num_classes, H, W)``.

    Asserts, for every size of ``sizes`` (a batch of 2 at the first, of 1 at the others): the
    result is ``(N, C, H, W)``, float, finite, on the input's device; the inputs are not
    modified in place. With ``per_frame`` (the default; pass ``False`` for an ensembler that
    deliberately smooths over frames): the same frame after another gives the same result
    (no hidden state), nothing of a call is kept after it returns, and when every model
    predicts the same probabilities the result has their argmax. Arguments that do not fit
    the pipeline may be refused, in ``bind`` or when called, but only with a
    :class:`~zoo_core.errors.ZooError`: a fresh ensembler bound to (or called with) other
    model names, or one model only.
    """
    check = _Check("ensembler", factory, name)
    device = torch.device(device)
    model_names = list(model_names)
    if not model_names:
        raise ValueError("model_names must name at least one model")
    ensembler = check.build(factory, args)
    check.ensure(callable(ensembler), f"the factory returned a {type(ensembler).__name__}, which is not callable")
    context = functools.partial(_bind_context, "ensembler", "ensemble", num_classes=num_classes, device=device)
    check.bind(ensembler, context(model_names))
    generator = torch.Generator().manual_seed(0)

    def frame(batch: int, size: Size, names: Sequence[str] = model_names, classes: int = num_classes) -> dict:
        return {m: _randn(generator, (batch, classes, *size), device).softmax(1) for m in names}

    batches = _batches(sizes)
    with torch.inference_mode():
        for batch, size in batches:
            _ensemble_pass(check, ensembler, frame(batch, size), per_frame)
    shown = _sizes_text(batches)
    check.passed(f"(N, C, H, W) for inputs {shown}, batches of 1 and 2; finite; inputs unchanged")

    if per_frame:
        with torch.inference_mode():
            first = frame(1, batches[1][1])
            result = _ensemble_pass(check, ensembler, first, per_frame)
            _ensemble_pass(check, ensembler, frame(1, batches[1][1]), per_frame)
            again = _ensemble_pass(check, ensembler, first, per_frame)
            if not torch.allclose(result, again, rtol=0, atol=1e-6):
                check.fail(
                    "gives a different result for the same frame after another frame: it keeps state "
                    "between calls; an ensembler is per frame (pass per_frame=False to the check if "
                    "smoothing over frames is its purpose)"
                )
            for batch, size in batches:
                same = frame(batch, size, model_names[:1])[model_names[0]]
                agreed = _ensemble_pass(check, ensembler, dict.fromkeys(model_names, same), per_frame)
                check.ensure(
                    torch.equal(agreed.argmax(1), same.argmax(1)),
                    f"changes the argmax where every model predicts the same probabilities "
                    f"({_size(size)}, batch {batch}); the models' agreement must survive the ensemble",
                )
        check.passed("per frame: the same frame gives the same result after another; nothing kept after a call")
        check.passed("where every model predicts the same, the result has the same argmax")

    _check_other_models(check, factory, args, model_names, context, frame, batches[1][1])
    return check.report


def _ensemble_pass(check: _Check, ensembler: Any, per_model: dict[str, torch.Tensor], per_frame: bool) -> torch.Tensor:
    first = next(iter(per_model.values()))
    where = f"per_model of {len(per_model)} models {list(per_model)}, each {_shape(first)}"
    given = {m: probs.clone() for m, probs in per_model.items()}  # only the ensembler and this function hold them
    result = check.call(where, ensembler, given)
    check.unchanged("per_model", per_model, given, where)
    check.ensure(isinstance(result, torch.Tensor), f"returned a {type(result).__name__} for {where}")
    if tuple(result.shape) != tuple(first.shape):
        check.fail(f"returned shape {_shape(result)} for {where}; expected {tuple(first.shape)}")
    check.ensure(
        result.is_floating_point() and torch.isfinite(result).all(),
        f"returned non-finite or non-float values ({result.dtype}) for {where}",
    )
    check.ensure(result.device == first.device, f"returned a result on {result.device} for inputs on {first.device}")
    result = result.clone()  # the ensembler may return one of its inputs itself
    if per_frame:
        refs = [weakref.ref(probs) for probs in given.values()]
        del given
        _check_released(
            check,
            refs,
            "the models' probabilities",
            where + " (pass per_frame=False to the check if smoothing over frames is its purpose)",
        )
    return result


def _check_other_models(
    check: _Check,
    factory: Callable[..., Any],
    args: dict[str, Any],
    model_names: list[str],
    context: Callable[[Sequence[str]], BindContext],
    frame: Callable[..., dict],
    size: Size,
) -> None:
    """Arguments that do not fit the pipeline's models may be refused (in bind or per frame), with a ZooError only."""
    renamed = [f"unknown-{m}" for m in model_names]
    cases = [(renamed, f"the model names {renamed}")]
    if len(model_names) > 1:
        cases.append((model_names[:1], f"one model {model_names[:1]}"))
    for names, what in cases:
        fresh = check.build(factory, args)
        if callable(getattr(fresh, "bind", None)) and check.refuses_cleanly(
            f"bind() with {what}", fresh.bind, context(names)
        ):
            continue
        with torch.inference_mode():
            check.refuses_cleanly(f"a frame of {what}", fresh, frame(1, size, names))
    shown = " or ".join(what for _, what in cases)
    check.passed(f"{shown}: refused with a ZooError, or accepted")
