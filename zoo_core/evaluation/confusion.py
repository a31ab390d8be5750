"""The saved confusion matrix, ``confusion.json``: written by ``zoo eval --confusion`` and ``zoo run``.

::

    {"class_names": ["wall", ...], "matrix": [[int, ...], ...]}

Rows are the ground truth, columns the prediction (as :class:`StreamingEvaluator` counts
them); pixels whose ground truth is ignored are not counted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DataError, describe_validation_error
from ..fileio import atomic_write_text


def write_confusion(path: str | os.PathLike, matrix: np.ndarray, class_names: Sequence[str]) -> None:
    """Write ``matrix`` (C x C counts) with its ``class_names`` to ``path`` atomically."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not fit {len(class_names)} class names")
    rows = ",\n    ".join(json.dumps(row) for row in matrix.astype(np.int64).tolist())  # one row a line: diffable
    names = json.dumps(list(class_names))
    atomic_write_text(path, f'{{\n  "class_names": {names},\n  "matrix": [\n    {rows}\n  ]\n}}\n')


class ConfusionFile(BaseModel):
    """``confusion.json``: strict JSON types, counts are non-negative integers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    class_names: list[str]
    matrix: list[list[Annotated[int, Field(ge=0, lt=2**63)]]]  # stored as int64


def read_confusion(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """The ``(C, C)`` int64 matrix and the class names of a ``confusion.json``; a DataError if it is not one."""
    redo = (
        "write it again with 'zoo eval PRED_DIR --data ROOT --confusion FILE' or take OUT/confusion.json of 'zoo run'"
    )
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise DataError(f"confusion matrix {path} does not exist; {redo}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"confusion matrix {path} is not readable JSON ({exc}); {redo}") from None
    try:
        confusion = ConfusionFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(line.strip() for line in describe_validation_error(exc, "", ConfusionFile).splitlines())
        raise DataError(f"confusion matrix {path}: {problems}; {redo}") from None
    c, rows = len(confusion.class_names), confusion.matrix
    if len(rows) != c or any(len(row) != c for row in rows):
        lengths = sorted({len(row) for row in rows})
        raise DataError(
            f"confusion matrix {path}: 'matrix' has {len(rows)} rows of {'/'.join(map(str, lengths))} "
            f"counts but there are {c} class names; it must be {c} rows of {c} counts (rows = ground "
            f"truth, columns = prediction); {redo}"
        )
    return np.array(rows, dtype=np.int64).reshape(c, c), confusion.class_names
