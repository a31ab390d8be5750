"""The training set of ``train.sources``: each source's settings checked before any data is read,
then its reader (:mod:`.layouts`), its labelled-fraction filter (:mod:`.label_cache`) and the
mix of all sources (:mod:`.sampler`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, component_errors
from ..interfaces import IGNORE_INDEX, Remapper
from .classes import NUM_CLASSES, VSPW_CLASSES
from .label_cache import Log, labelled_subset, remapping_fingerprint, stderr_log
from .layouts import RemappedImages, VSPWFrames
from .sampler import Part, TrainSet
from .vspw import Transform

SOURCE_TYPES = ("vspw", "coco-stuff", "ade20k", "cityscapes")


def build_train_set(
    sources: Sequence[Any],
    default_root: str | Path | None,
    transforms: Transform | None,
    seed: int,
    *,
    progress: bool = True,
    log: Log | None = None,
) -> TrainSet:
    """The training set of ``train.sources`` (objects with the fields of ``SourceSpec``)."""
    from ..plugins import get_catalog

    log = log or stderr_log
    # Check every source's settings before any dataset is listed or scanned.
    resolved = []
    for number, source in enumerate(sources):
        field = f"train.sources[{number}]"
        if source.type not in SOURCE_TYPES:
            raise ConfigError(
                f"{field}.type: unknown source type {source.type!r}; choose one of: {', '.join(SOURCE_TYPES)}"
            )
        remapper_name = source.remapper or source.type
        if source.type == "vspw" and remapper_name != "vspw":
            raise ConfigError(
                f"{field}.remapper: a vspw source reads VSPW ids; leave remapper out (found {source.remapper!r})"
            )
        root = source.root if source.root is not None else (default_root if source.type == "vspw" else None)
        if root is None:
            where = "" if source.type == "vspw" else f" of the {source.type} dataset"
            raise ConfigError(f"{field}.root: give the folder{where} (vspw sources default to data.root)")
        args = {"min_labelled": source.min_labelled} if source.min_labelled > 0 else {}
        if getattr(source, "table", None) is not None:  # the reading of a table remapper (coco-stuff: strict, loose)
            args["table"] = source.table
        try:
            remapper: Remapper = get_catalog().build("remapper", remapper_name, args)
        except ConfigError as exc:
            raise ConfigError(f"{field}.remapper: {exc}") from exc
        _check_lut(remapper, f"{field}.remapper ({remapper_name})")
        label = f"{get_catalog().get('remapper', remapper_name).describe()} of {field}"
        resolved.append((field, source, Path(root), remapper, label))

    parts, class_names = [], None
    for field, source, root, remapper, label in resolved:
        if source.type == "vspw":
            dataset: Any = VSPWFrames(root, source.split)
            class_names = class_names or dataset.class_names
        else:
            dataset = RemappedImages(source.type, root, source.split, remapper, label)
        indices: Sequence[int] = range(len(dataset))
        if source.min_labelled > 0:
            indices = labelled_subset(
                dataset,
                _reported(remapper.keep, label),
                source.min_labelled,
                remapping_fingerprint(remapper),
                progress=progress,
                log=log,
            )
        if not indices:
            raise DataError(
                f"{field}: no image of {source.type} {source.split} ({root}) has {source.min_labelled:.0%} "
                f"of its pixels labelled after remapping; lower {field}.min_labelled"
            )
        parts.append(Part(f"{source.type} {source.split}", dataset, indices, source.ratio))
    train_set = TrainSet(parts, transforms, seed, class_names or VSPW_CLASSES)
    if len(parts) > 1:
        mix = ", ".join(
            f"{part.name} {len(part):,} images -> {share:,} per epoch" for part, share in zip(parts, train_set.shares())
        )
        log(f"training mix ({len(train_set):,} samples per epoch): {mix}")
    return train_set


def _reported(keep: Callable[[np.ndarray], bool], label: str) -> Callable[[np.ndarray], bool]:
    """The remapper's filter, its failures reported as the remapper's (one line, no traceback)."""

    def checked(mask: np.ndarray) -> bool:
        with component_errors(label):
            return keep(mask)

    return checked


def _check_lut(remapper: Remapper, where: str) -> None:
    lut = np.asarray(getattr(remapper, "lut", None))
    if lut.shape != (256,) or not np.all((lut < NUM_CLASSES) | (lut == IGNORE_INDEX)):
        raise ConfigError(
            f"{where}: the remapper's lut must be 256 values of VSPW train ids 0..{NUM_CLASSES - 1} or 255"
        )
