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

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write_text


def write_confusion(path: str | os.PathLike, matrix: np.ndarray, class_names: Sequence[str]) -> None:
    """Write ``matrix`` (C x C counts) with its ``class_names`` to ``path`` atomically."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not fit {len(class_names)} class names")
    rows = ",\n    ".join(json.dumps(row) for row in matrix.astype(np.int64).tolist())  # one row a line: diffable
    atomic_write_text(path, f'{{\n  "class_names": {json.dumps(list(class_names))},\n  "matrix": [\n    {rows}\n  ]\n}}\n')


def read_confusion(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """The ``(C, C)`` int64 matrix and the class names of a ``confusion.json``; a DataError if it is not one."""
    redo = "write it again with 'zoo eval PRED_DIR --data ROOT --confusion FILE' or take OUT/confusion.json of 'zoo run'"
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise DataError(f"confusion matrix {path} does not exist; {redo}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"confusion matrix {path} is not readable JSON ({exc}); {redo}") from None
    if not isinstance(data, dict) or "matrix" not in data or "class_names" not in data:
        raise DataError(f"confusion matrix {path} must be a JSON object with 'class_names' and 'matrix'; {redo}")
    names = data["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"confusion matrix {path}: 'class_names' must be a list of strings; {redo}")
    try:
        matrix = np.array(data["matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"confusion matrix {path}: 'matrix' must be a list of rows of counts; {redo}") from None
    c = len(names)
    if matrix.shape != (c, c):
        raise DataError(f"confusion matrix {path}: 'matrix' has shape {matrix.shape} but there are {c} class names; "
                        f"it must be {c} rows of {c} counts (rows = ground truth, columns = prediction); {redo}")
    if c and (not np.isfinite(matrix).all() or (matrix < 0).any() or (matrix != np.round(matrix)).any()):
        raise DataError(f"confusion matrix {path}: 'matrix' must hold non-negative integer pixel counts; {redo}")
    return matrix.astype(np.int64), names
