"""The probability cache of ``zoo ensemble search --cache DIR``: each model's TTA probabilities, once.

::

    DIR/<key>/cache.json       what the probabilities are: model, weights and config sha256, TTA,
                               precision, dtype, stride, top-k, classes
    DIR/<key>/<video>.npy      (frames, C, h, w) probabilities (top-k: (frames, k, h, w) values)
    DIR/<key>/<video>.classes.npy   top-k only: (frames, k, h, w) uint8 class of each value

``<key>`` is a hash of ``cache.json``: a model whose weights, TTA, precision or cache settings
change gets another key, and a directory that still holds the model under an old key is
refused (never silently reused). Each video's files are written atomically once the video is
complete, so an interrupted caching resumes at the first video without its file. Frames are
read back one at a time from a memory map.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..fileio import atomic_path, atomic_write_text

RECORD_NAME = "cache.json"
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class CacheSettings:
    dtype: str = "float16"
    stride: int = 1
    topk: int | None = None

    @property
    def exact(self) -> bool:
        """Whether the cached probabilities are those ``zoo run`` fuses, bit for bit."""
        return self.dtype == "float32" and self.stride == 1 and self.topk is None

    def check(self, num_classes: int) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"--cache-dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.stride < 1:
            raise ConfigError(f"--cache-stride {self.stride}: must be at least 1 (1 keeps every pixel)")
        if self.topk is not None and not 1 <= self.topk < num_classes:
            raise ConfigError(
                f"--cache-topk {self.topk}: must be between 1 and {num_classes - 1} (the models predict "
                f"{num_classes} classes; leave it out to keep them all)"
            )

    def reduce(self, probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """One frame's ``(C, H, W)`` probabilities as stored: subsampled, top-k values (+ classes), dtype."""
        probs = probs[:, :: self.stride, :: self.stride]
        classes = None
        if self.topk is not None:
            probs, index = probs.topk(self.topk, dim=0)
            classes = index.to(torch.uint8).numpy()
        return probs.numpy().astype(self.dtype), classes

    def expand(self, values: np.ndarray, classes: np.ndarray | None, num_classes: int) -> np.ndarray:
        """Stored values back to dense float32 ``(C, h, w)`` probabilities (0 outside the top k)."""
        values = values.astype(np.float32)
        if classes is None:
            return values
        dense = np.zeros((num_classes, *values.shape[1:]), np.float32)
        np.put_along_axis(dense, classes.astype(np.int64), values, axis=0)
        return dense


class ModelCache:
    """One model's folder in the cache: ``has(video)``, ``frames(video)``, ``writer(video, ...)``."""

    def __init__(self, folder: Path, record: dict, settings: CacheSettings):
        self.folder = folder
        self.record = record
        self.settings = settings
        self.num_classes = int(record["num_classes"])

    def _paths(self, video: str) -> tuple[Path, Path | None]:
        values = self.folder / f"{video}.npy"
        return values, (self.folder / f"{video}.classes.npy" if self.settings.topk is not None else None)

    def has(self, video: str) -> bool:
        return self._paths(video)[0].exists()

    def frames(self, video: str, count: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
        """The ``count`` frames of ``video``, dense float32 ``(C, h, w)``; a DataError for a file that does not fit."""
        values_path, classes_path = self._paths(video)
        depth = self.settings.topk or self.num_classes
        shape = (count, depth, *_strided(size, self.settings.stride))
        arrays = []
        for path, dtype in ((values_path, self.settings.dtype), (classes_path, "uint8")):
            if path is None:
                arrays.append(None)
                continue
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{path}: not a readable cache file ({exc}); delete it and it is cached again"
                ) from None
            if array.shape != shape or array.dtype != np.dtype(dtype):
                raise DataError(
                    f"{path}: holds {array.dtype} {tuple(array.shape)}, expected {dtype} {shape} for "
                    f"the {count} frames of video {video}; delete it and it is cached again"
                )
            arrays.append(array)
        values, classes = arrays
        for i in range(count):
            yield self.settings.expand(values[i], None if classes is None else classes[i], self.num_classes)

    def writer(self, video: str, count: int, size: tuple[int, int]) -> CacheWriter:
        return CacheWriter(self, video, count, size)


class CacheWriter:
    """Writes one video frame by frame into temporary memory maps, renamed into place by :meth:`close`."""

    def __init__(self, cache: ModelCache, video: str, count: int, size: tuple[int, int]):
        self.cache = cache
        self.paths = cache._paths(video)
        settings = cache.settings
        shape = (count, settings.topk or cache.num_classes, *_strided(size, settings.stride))
        self._stack = []
        self._arrays = []
        for path, dtype in zip(self.paths, (settings.dtype, "uint8")):
            if path is None:
                self._arrays.append(None)
                continue
            context = atomic_path(path)
            tmp = context.__enter__()
            self._stack.append(context)
            self._arrays.append(np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape))
        self.count = 0

    def add(self, probs: torch.Tensor) -> np.ndarray:
        """Store the next frame's ``(C, H, W)`` probabilities; returns them as read back (dense float32)."""
        values, classes = self.cache.settings.reduce(probs)
        self._arrays[0][self.count] = values
        if classes is not None:
            self._arrays[1][self.count] = classes
        self.count += 1
        return self.cache.settings.expand(values, classes, self.cache.num_classes)

    def close(self, error: BaseException | None = None) -> None:
        """Complete the files (the classes first: the values file marks the video as cached), or drop them."""
        for array in self._arrays:
            if array is not None:
                array.flush()
        self._arrays.clear()
        for context in reversed(self._stack):
            if error is None:
                context.__exit__(None, None, None)
            else:
                context.__exit__(type(error), error, error.__traceback__)
        self._stack.clear()


def _strided(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return (-(-size[0] // stride), -(-size[1] // stride))


def cache_record(
    name: str, files: dict[str, str], tta: dict, precision: str, settings: CacheSettings, num_classes: int
):
    """What a model's cached probabilities are: the fields of ``cache.json``."""
    return {
        "model": name,
        "files": dict(sorted(files.items())),  # file name -> sha256 (config.json, model.safetensors)
        "tta": tta,
        "precision": precision,
        "dtype": settings.dtype,
        "stride": settings.stride,
        "topk": settings.topk,
        "num_classes": num_classes,
    }


def record_key(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def open_cache(root: Path, records: list[dict], settings: CacheSettings) -> list[ModelCache]:
    """Each model's cache folder under ``root``; refuses a folder that holds a model under another key.

    Nothing is written here; :func:`claim` creates the folders once every other check has passed.
    """
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--cache {root}: not a directory; choose a directory for the cache")
    found: dict[str, list[tuple[Path, dict]]] = {}  # model name -> its folders
    for record_path in sorted(root.glob(f"*/{RECORD_NAME}")) if root.is_dir() else []:
        try:
            stored = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(
                f"{record_path}: unreadable ({exc}); delete {record_path.parent} and it is cached again"
            ) from None
        if not isinstance(stored, dict) or not isinstance(stored.get("model"), str):
            raise ConfigError(f"{record_path}: not a cache record; delete {record_path.parent} and it is cached again")
        if record_key(stored) != record_path.parent.name:
            raise ConfigError(
                f"{record_path}: does not match its folder's key {record_path.parent.name} (edited by hand?); "
                f"delete {record_path.parent} and it is cached again"
            )
        found.setdefault(stored["model"], []).append((record_path.parent, stored))
    caches = []
    for record in records:
        key = record_key(record)
        others = [(folder, stored) for folder, stored in found.get(record["model"], []) if folder.name != key]
        if others:
            folder, stored = others[0]
            raise ConfigError(
                f"--cache {root}: model {record['model']!r} is cached in {folder} with "
                f"{_differences(stored, record)}; that cache is not reused: choose another --cache, "
                f"or delete {folder}"
            )
        caches.append(ModelCache(root / key, record, settings))
    return caches


def claim(caches: list[ModelCache]) -> None:
    """Create each model's folder and its ``cache.json``."""
    for cache in caches:
        path = cache.folder / RECORD_NAME
        if not path.exists():
            cache.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(cache.record, indent=2, sort_keys=True))


def _differences(stored: dict, wanted: dict) -> str:
    parts = []
    for field in ("files", "tta", "precision", "dtype", "stride", "topk", "num_classes"):
        then, now = stored.get(field), wanted.get(field)
        if then == now:
            continue
        if field == "files":
            for name, sha in now.items():
                old = (then or {}).get(name) if isinstance(then, dict) else None
                if old != sha:
                    was = f"sha256 {old[:12]}..." if isinstance(old, str) else "unknown"
                    parts.append(f"other {name} ({was} there, sha256 {sha[:12]}... now)")
        else:
            parts.append(f"{field} {json.dumps(then)} (now {json.dumps(now)})")
    return "; ".join(parts) or "another record"
