"""Where predicted frames go: label PNGs in the VSPW palette (written off the main thread)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..data.classes import PALETTE, palette_bytes
from ..fileio import atomic_path

T = TypeVar("T")


def write_label_png(path: Path, labels: np.ndarray, compress_level: int = 1) -> None:
    """A palette PNG whose pixel values are the train ids (read back as indices), written atomically."""
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))
    image.putpalette(palette_bytes())  # turns the grey image into a palette one, values unchanged
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=compress_level)


def read_label_png(path: Path) -> np.ndarray:
    """The train ids of a PNG :func:`write_label_png` wrote (its palette indices), as HxW uint8."""
    with Image.open(path) as image:
        return np.array(image, dtype=np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Train ids -> RGB in the VSPW palette (ignore and unknown ids black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(PALETTE)] = np.asarray(PALETTE, np.uint8)
    return lut[labels]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (image.astype(np.float32) * (1 - alpha) + colorize(labels).astype(np.float32) * alpha).astype(np.uint8)


class PngWriter:
    """Encodes and writes PNGs on a worker thread so prediction never waits for zlib."""

    def __init__(self, compress_level: int = 1, max_pending: int = 16) -> None:
        self.compress_level = compress_level
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-png")
        self._pending: list[Future] = []
        self._max_pending = max_pending

    def submit(self, path: Path, labels: np.ndarray) -> None:
        self._pending.append(self._pool.submit(write_label_png, path, labels, self.compress_level))
        if len(self._pending) > self._max_pending:  # bound memory if the disk is slow
            self._pending.pop(0).result()

    def flush(self) -> None:
        """Wait for every submitted file; re-raise the first failure."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> PngWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Produce ``items`` on a reader thread, ``depth`` ahead; errors surface in the consumer."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put((item, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            buffer.put((None, exc))
        buffer.put((done, None))

    thread = threading.Thread(target=produce, name="zoo-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.01)
