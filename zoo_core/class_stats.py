"""Reading ``stats.json``, the class statistics ``zoo data stats`` writes (:mod:`zoo_core.data.stats`).

Its own module, free of torch and of the data readers, so that the public
:func:`zoo_core.interfaces.read_class_stats` imports nothing heavy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import DataError, describe_validation_error

COUNT_FIELDS = ("pixel_counts", "frame_counts", "video_counts")
Count = Annotated[int, Field(ge=0, lt=2**63)]  # stored as int64


class ClassStats(BaseModel):
    """The fields of ``stats.json`` that the losses read; strict JSON types (a count is an integer, not "3")."""

    model_config = ConfigDict(extra="allow", strict=True)  # root, split, totals: informative

    num_classes: int = Field(gt=0)
    class_names: list[str]
    pixel_counts: list[Count]
    frame_counts: list[Count]
    video_counts: list[Count]
    priors: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]
    labelled_pixels: Count


def read_stats(path: str | os.PathLike) -> dict[str, Any]:
    """The statistics saved by ``zoo data stats``, checked; a DataError naming the file and the field otherwise.

    ``pixel_counts``, ``frame_counts`` and ``video_counts`` come back as int64 arrays and
    ``priors`` as a float64 array, each of ``num_classes`` entries.
    """
    path = Path(path)
    redo = "write it with 'zoo data stats ROOT --split train -o FILE'"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"class statistics {path} do not exist; {redo}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"class statistics {path} are not readable JSON ({exc}); {redo}") from None
    try:
        stats = ClassStats.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(line.strip() for line in describe_validation_error(exc, "", ClassStats).splitlines())
        raise DataError(f"class statistics {path}: {problems}; {redo}") from None
    c = stats.num_classes
    for key in ("class_names", *COUNT_FIELDS, "priors"):
        if len(getattr(stats, key)) != c:
            raise DataError(
                f"class statistics {path}: '{key}' has {len(getattr(stats, key))} entries but num_classes "
                f"is {c}; {redo}"
            )
    if sum(stats.pixel_counts) == 0:
        raise DataError(f"class statistics {path}: every class has 0 pixels; {redo} on a split with annotated masks")
    result = stats.model_dump()
    result.update({key: np.array(getattr(stats, key), dtype=np.int64) for key in COUNT_FIELDS})
    result["priors"] = np.array(stats.priors, dtype=np.float64)
    return result
