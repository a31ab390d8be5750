"""A small synthetic dataset in the VSPW layout, for the quickstart and the tests.

Each video is a camera panning smoothly over a scene wider than the frame. The scene is
made of bands of VSPW "stuff" classes (sky, building, tree, road, water...) and moving
objects (car, person, bus...) go through it. Every class has its own colour and texture
(stripes, checks or blotchy noise with a class-specific period and orientation), so a
small network can learn to tell them apart. Like the real data, some pixels are raw 0
("others": a region of an unlabelled material) and some raw 255 (void: a thin border
around every object). The output is a pure function of the arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError
from ..interfaces import IGNORE_INDEX
from .classes import VSPW_CLASSES, palette_bytes
from .vspw import LABEL_FILE

# name -> (RGB base colour, texture, period in pixels, orientation in degrees)
APPEARANCE: dict[str, tuple[tuple[int, int, int], str, float, float]] = {
    "sky": ((110, 160, 230), "noise", 14, 0),
    "ceiling": ((205, 200, 185), "checks", 10, 0),
    "wall": ((190, 175, 150), "stripes", 8, 0),
    "building": ((150, 110, 90), "checks", 6, 0),
    "house": ((170, 80, 60), "stripes", 5, 90),
    "tree": ((40, 110, 40), "noise", 3, 0),
    "mountain": ((110, 100, 120), "stripes", 10, 30),
    "handrail_or_fence": ((140, 140, 150), "stripes", 4, 90),
    "road": ((80, 80, 85), "noise", 2, 0),
    "grass": ((70, 160, 50), "stripes", 3, 80),
    "water": ((40, 90, 160), "stripes", 7, 10),
    "sand": ((210, 190, 130), "noise", 5, 0),
    "floor": ((160, 120, 80), "stripes", 9, 0),
    "sea": ((20, 70, 130), "stripes", 5, -20),
    "car": ((200, 30, 30), "checks", 4, 45),
    "person": ((230, 180, 140), "stripes", 3, 0),
    "bus": ((240, 200, 30), "stripes", 6, 90),
    "bicycle": ((30, 30, 30), "checks", 3, 0),
    "dog": ((140, 90, 40), "noise", 2, 0),
    "ship_or_boat": ((240, 240, 240), "stripes", 4, 0),
}
OTHERS_APPEARANCE = ((150, 60, 150), "checks", 5, 30)  # an unlabelled material: raw id 0

TOP_CLASSES = ("sky", "ceiling")
MIDDLE_CLASSES = ("building", "wall", "house", "tree", "mountain", "handrail_or_fence")
BOTTOM_CLASSES = ("road", "grass", "water", "sand", "floor", "sea")
# name -> (shape, height and width as fractions of the frame); "box" or "ellipse"
OBJECTS = {
    "car": ("box", 0.22, 0.30),
    "person": ("ellipse", 0.42, 0.12),
    "bus": ("box", 0.34, 0.42),
    "bicycle": ("box", 0.20, 0.18),
    "dog": ("ellipse", 0.16, 0.20),
    "ship_or_boat": ("box", 0.20, 0.34),
}
TEXTURE_AMPLITUDE = 40.0
SENSOR_NOISE = 3.0
VOID_BORDER_PX = 1.5
SCENE_SCALE = (1.25, 1.6)  # scene size relative to the frame (height, width)


def raw_id(name: str) -> int:
    return VSPW_CLASSES.index(name) + 1


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    splits: dict[str, list[str]]
    frames: int
    size: tuple[int, int]

    def describe(self) -> list[str]:
        lines = [
            f"wrote a synthetic VSPW dataset to {self.root} ({self.frames} frames of "
            f"{self.size[0]}x{self.size[1]} per video)"
        ]
        for split, videos in self.splits.items():
            note = ", no masks" if split == "test" else ""
            lines.append(f"  {split}.txt: {len(videos)} video(s){note}: {', '.join(videos)}")
        lines.append(f"  {LABEL_FILE}: 124 classes + others")
        return lines


def texture(appearance: tuple, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The RGB float32 appearance of a material at pixel coordinates ``yy, xx``."""
    colour, kind, period, angle = appearance
    theta = np.deg2rad(angle)
    along = xx * np.cos(theta) + yy * np.sin(theta)
    across = -xx * np.sin(theta) + yy * np.cos(theta)
    if kind == "stripes":
        pattern = np.sin(2 * np.pi * along / period)
    elif kind == "checks":
        pattern = np.sign(np.sin(np.pi * along / period) * np.sin(np.pi * across / period))
    else:  # "noise": one random value per period x period cell, hashed from the cell and the colour
        cell_y = np.floor(yy / period).astype(np.int64)
        cell_x = np.floor(xx / period).astype(np.int64)
        salt = colour[0] * 65536 + colour[1] * 256 + colour[2]
        h = (cell_y * 374761393 + cell_x * 668265263 + salt * 2246822519) & 0xFFFFFFFF
        h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
        pattern = ((h >> 8) & 0xFFFF) / 32767.5 - 1.0
    return np.asarray(colour, dtype=np.float32) + TEXTURE_AMPLITUDE * pattern[..., None].astype(np.float32)


def _wave(rng: np.random.Generator, width: int, base: float, amplitude: float) -> np.ndarray:
    """A smooth boundary ``y(x)``: ``base`` plus a sine of random period and phase."""
    x = np.arange(width)
    period = rng.uniform(0.5, 1.5) * width
    return base + amplitude * np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi))


def _scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw labels (H, W) uint8 and image (H, W, 3) float32 of a static scene: three bands of stuff."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    top_edge = _wave(rng, width, height * rng.uniform(0.25, 0.40), height * 0.05)
    bottom_edge = _wave(rng, width, height * rng.uniform(0.55, 0.70), height * 0.05)
    middle = rng.choice(MIDDLE_CLASSES, size=rng.integers(2, 4), replace=False)
    bottom = rng.choice(BOTTOM_CLASSES, size=rng.integers(1, 3), replace=False)
    # Vertical cuts split the middle and bottom bands into segments of different classes.
    middle_segment = np.searchsorted(np.sort(rng.uniform(0.2, 0.8, len(middle) - 1) * width), xx, side="right")
    bottom_segment = np.searchsorted(np.sort(rng.uniform(0.3, 0.7, len(bottom) - 1) * width), xx, side="right")
    names = np.where(
        yy < top_edge,
        rng.choice(TOP_CLASSES),
        np.where(yy < bottom_edge, middle[middle_segment], bottom[bottom_segment]),
    )
    labels = np.zeros((height, width), dtype=np.uint8)
    image = np.zeros((height, width, 3), dtype=np.float32)
    for name in np.unique(names):
        region = names == name
        labels[region] = raw_id(name)
        image[region] = texture(APPEARANCE[name], yy[region], xx[region])
    # One blob of an unlabelled material ("others"), near the middle where the camera passes.
    cy, cx = height * rng.uniform(0.35, 0.65), width * rng.uniform(0.4, 0.6)
    blob = ((yy - cy) / (0.18 * height)) ** 2 + ((xx - cx) / (0.12 * width)) ** 2 <= 1
    labels[blob] = 0
    image[blob] = texture(OTHERS_APPEARANCE, yy[blob], xx[blob])
    return labels, image


@dataclass(frozen=True)
class _MovingObject:
    name: str
    shape: str
    radius: tuple[float, float]
    start: tuple[float, float]  # centre in frame coordinates at t = 0 and t = 1
    end: tuple[float, float]

    def draw(self, labels: np.ndarray, image: np.ndarray, t: float) -> None:
        """Paint the object at time ``t`` in [0, 1], with a void border, into one frame."""
        cy = self.start[0] + t * (self.end[0] - self.start[0])
        cx = self.start[1] + t * (self.end[1] - self.start[1])
        yy, xx = np.mgrid[0 : labels.shape[0], 0 : labels.shape[1]].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        inside = self._distance(dy, dx, 0.0) <= 1
        border = (self._distance(dy, dx, VOID_BORDER_PX) <= 1) & ~inside
        labels[border] = IGNORE_INDEX
        labels[inside] = raw_id(self.name)
        # Texture in object coordinates, so it moves with the object.
        image[inside] = texture(APPEARANCE[self.name], dy[inside], dx[inside])

    def _distance(self, dy: np.ndarray, dx: np.ndarray, grow: float) -> np.ndarray:
        ny, nx = dy / (self.radius[0] + grow), dx / (self.radius[1] + grow)
        return np.maximum(np.abs(ny), np.abs(nx)) if self.shape == "box" else ny**2 + nx**2


def _objects(rng: np.random.Generator, height: int, width: int) -> list[_MovingObject]:
    objects = []
    for name in rng.choice(list(OBJECTS), size=rng.integers(1, 4), replace=False):
        shape, rel_h, rel_w = OBJECTS[name]
        scale = rng.uniform(0.8, 1.2)
        radius = (rel_h * height * scale / 2, rel_w * width * scale / 2)
        y0, y1 = rng.uniform(0.45, 0.8, size=2) * height
        x0, x1 = rng.uniform(0.1, 0.9, size=2) * width
        objects.append(_MovingObject(str(name), shape, radius, (y0, x0), (y1, x1)))
    return objects


def _render_video(
    video_dir: Path,
    rng: np.random.Generator,
    frames: int,
    size: tuple[int, int],
    with_masks: bool,
    raw_palette: list[int],
) -> None:
    height, width = size
    scene_h, scene_w = round(height * SCENE_SCALE[0]), round(width * SCENE_SCALE[1])
    scene_labels, scene_image = _scene(rng, scene_h, scene_w)
    objects = _objects(rng, height, width)
    # The camera pans from one side of the scene to the other with a smooth (cosine) ease.
    pan_y = rng.uniform(0, scene_h - height, size=2)
    pan_x = np.sort(rng.uniform(0, scene_w - width, size=2))[:: rng.choice([-1, 1])]
    (video_dir / "origin").mkdir(parents=True, exist_ok=True)
    if with_masks:
        (video_dir / "mask").mkdir(exist_ok=True)
    for index in range(frames):
        t = index / max(frames - 1, 1)
        ease = (1 - np.cos(np.pi * t)) / 2
        top = round(pan_y[0] + ease * (pan_y[1] - pan_y[0]))
        left = round(pan_x[0] + ease * (pan_x[1] - pan_x[0]))
        labels = scene_labels[top : top + height, left : left + width].copy()
        image = scene_image[top : top + height, left : left + width].copy()
        for moving in objects:
            moving.draw(labels, image, t)
        image += rng.normal(0, SENSOR_NOISE, image.shape).astype(np.float32)
        stem = f"{index + 1:08d}"
        Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(
            video_dir / "origin" / f"{stem}.jpg", quality=95
        )
        if with_masks:
            mask = Image.fromarray(labels)
            mask.putpalette(raw_palette)  # turns the 'L' image into 'P', keeping the ids
            mask.save(video_dir / "mask" / f"{stem}.png")


def synthesize(
    out: str | Path,
    videos: int = 6,
    frames: int = 12,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
    val_fraction: float = 1 / 3,
    overwrite: bool = False,
) -> SynthSummary:
    """Write ``videos`` annotated videos (split into train and val) plus one unannotated test video.

    ``size`` is (height, width) of the frames. The result depends only on the arguments.
    ``out`` must be empty or absent unless ``overwrite``.
    """
    height, width = (int(v) for v in size)
    if height < 16 or width < 16:
        raise ConfigError(f"size: frames must be at least 16x16, got {height}x{width}")
    if videos < 2:
        raise ConfigError(f"videos: need at least 2 (one train, one val), got {videos}")
    if frames < 1:
        raise ConfigError(f"frames: need at least 1 frame per video, got {frames}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} exists and is not a directory; choose another output path")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise DataError(f"{root} is not empty; choose a new directory, or overwrite it (--force)")
    root.mkdir(parents=True, exist_ok=True)

    names = [f"{index}_synth_s{seed}" for index in range(videos + 1)]
    val_count = min(max(1, round(videos * val_fraction)), videos - 1)
    splits = {"train": names[: videos - val_count], "val": names[videos - val_count : videos], "test": names[videos:]}
    # Mask PNGs hold raw ids, so colour index k (k >= 1) is class k - 1's colour; 0 is black.
    raw_palette = ([0, 0, 0] + palette_bytes())[:768]
    for index, name in enumerate(names):
        rng = np.random.default_rng((seed, index))
        _render_video(
            root / "data" / name, rng, frames, (height, width), with_masks=index < videos, raw_palette=raw_palette
        )
    for split, members in splits.items():
        (root / f"{split}.txt").write_text("\n".join(members) + "\n", encoding="utf-8")
    label_table = {"others": "0", **{name: str(i + 1) for i, name in enumerate(VSPW_CLASSES)}}
    (root / LABEL_FILE).write_text(json.dumps(label_table, indent=1) + "\n", encoding="utf-8")
    return SynthSummary(root, splits, frames, (height, width))
