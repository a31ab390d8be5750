"""Reading a detectron2 ``.pkl`` checkpoint without running whatever a pickle may ask for.

A pickle is a program: loading one calls any importable function it names (``os.system``
included). :func:`load_checkpoint_pickle` admits only what a checkpoint of numpy arrays
needs (numpy's array and dtype reconstruction, and plain containers) and refuses every
other global with a :class:`~zoo_core.errors.DataError` naming the file and the global,
before anything is called.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from pathlib import Path
from typing import Any

from zoo_core.errors import DataError


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes`` (latin-1 only)."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused codec {encoding!r}")
    return codecs.encode(text, "latin1")


def _allowed() -> dict[tuple[str, str], Any]:
    import numpy

    core = numpy._core if hasattr(numpy, "_core") else numpy.core
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): numpy.ndarray,
        ("numpy", "dtype"): numpy.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
    }
    # numpy 2 renamed numpy.core to numpy._core; a pickle names the module its writer had
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = core.multiarray.scalar  # 0-d arrays, numpy scalars
        allowed[(f"{module}.numeric", "_frombuffer")] = core.numeric._frombuffer  # protocol 5 arrays
    return allowed


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file)
        self.path = path
        self.allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refused to unpickle the global {module}.{name}: a checkpoint may hold only numpy "
                "arrays and plain containers; this file could run code, do not load it"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.path}: refused a persistent id in the pickle: not a plain checkpoint of numpy arrays")


def load_checkpoint_pickle(path: str | Path) -> Any:
    """The object in the pickle at ``path``, built from numpy arrays and plain containers only."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; give the path of a model_final_*.pkl checkpoint") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; give the path of a model_final_*.pkl checkpoint") from None
    except Exception as exc:  # a truncated or non-pickle file: say so in one line
        raise DataError(f"{path}: not a readable pickle checkpoint ({type(exc).__name__}: {exc})") from None
