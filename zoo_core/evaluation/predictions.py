"""Reading prediction PNGs the way the official VSPW scripts do: ``np.array(Image.open(path))``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError

_HOW_TO = "save one single-channel 8-bit PNG (mode 'L' or 'P') of train ids 0..123 per frame"


def read_prediction(path: str | os.PathLike) -> np.ndarray:
    """An HxW uint8 map of train ids: a palette PNG gives its indices, a grey PNG its values.

    Colour images are refused rather than converted: their pixel values are colours, and
    turning them into ids would silently score garbage.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prediction file not found; {_HOW_TO}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: prediction file is empty (0 bytes); write it again")
    try:
        with Image.open(path) as image:
            image.load()
            mode, channels = image.mode, len(image.getbands())
            array = np.array(image) if mode in ("L", "P") else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read the prediction image ({exc}); write it again as a PNG") from None
    if array is None:
        what = f"{channels} channels: colours, not class ids" if channels > 1 else "not 8-bit"
        raise DataError(f"{path}: prediction image has mode {mode!r} ({what}); {_HOW_TO}")
    return array
