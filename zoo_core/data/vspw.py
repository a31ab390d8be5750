"""Reader for the VSPW layout: split files, per-video frames and label masks.

::

    ROOT/train.txt val.txt test.txt          one video folder name per line
    ROOT/label_num_dic_final.json            {"others": "0", "wall": "1", ...}
    ROOT/data/<video>/origin/00000001.jpg    RGB frames
    ROOT/data/<video>/mask/00000001.png      raw label ids (absent for the test split)

Masks are returned as train ids: raw 0 ("others") and 255 (void) become 255, raw x
becomes x - 1. Every problem with a file raises :class:`~zoo_core.errors.DataError`
naming the video, the frame and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Annotated

import numpy as np
import torch
from PIL import Image
from pydantic import Field, TypeAdapter, ValidationError

from ..errors import DataError, describe_validation_error
from ..interfaces import IGNORE_INDEX
from .classes import NUM_CLASSES, VSPW_CLASSES

LABEL_FILE = "label_num_dic_final.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# ImageNet statistics on the 0..255 scale, as mmsegmentation normalises.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)

# Raw VSPW id -> train id: 1..124 -> 0..123; 0 ("others"), 255 (void) and anything else -> ignore.
RAW_TO_TRAIN_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
RAW_TO_TRAIN_LUT[1 : NUM_CLASSES + 1] = np.arange(NUM_CLASSES, dtype=np.uint8)
VALID_RAW = np.zeros(256, dtype=bool)
VALID_RAW[: NUM_CLASSES + 1] = True
VALID_RAW[255] = True

# label_num_dic_final.json: class name -> raw id, written as a string ("1") or a number
_LABEL_TABLE = TypeAdapter(dict[str, Annotated[int, Field(ge=0, le=255)]])

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FrameRef:
    """One frame of a video: ``name`` is the file stem shared by the image and its mask."""

    video: str
    name: str
    image_path: Path
    mask_path: Path | None


@dataclass
class Frame:
    """A decoded frame: RGB image and train-id mask (None for videos without masks)."""

    ref: FrameRef
    image: np.ndarray
    mask: np.ndarray | None


def raw_to_train(mask: np.ndarray) -> np.ndarray:
    """Raw VSPW ids (uint8) -> train ids: 0 and 255 -> 255, x -> x - 1."""
    return RAW_TO_TRAIN_LUT[mask]


def normalize(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (3, H, W) float32, ImageNet mean/std on the 0..255 scale."""
    tensor = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
    return (tensor - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


class VSPWDataset:
    """The videos of one split of a VSPW-format dataset; frames are read on demand."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DataError(
                f"dataset root {self.root} is not a directory; pass the folder that holds "
                "train.txt, val.txt and data/ (make a small one with 'zoo data synth OUT')"
            )
        self.videos = self._read_split()
        self.class_names = self._read_class_names()
        self._frames: dict[str, list[FrameRef]] = {}

    def _read_split(self) -> list[str]:
        split_file = self.root / f"{self.split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in self.root.glob("*.txt")) or ["(none)"]
            raise DataError(
                f"split {self.split!r} not found: no {split_file}; "
                f"available splits in {self.root}: {', '.join(available)}"
            )
        videos = read_split_file(split_file)
        for video in videos:
            video_dir = self.root / "data" / video
            if not video_dir.is_dir():
                raise DataError(
                    f"split file {split_file} names video {video!r} but {video_dir} does not exist; "
                    "restore the video folder or remove it from the split file"
                )
        return videos

    def _read_class_names(self) -> list[str]:
        label_file = self.root / LABEL_FILE
        if not label_file.is_file():
            return list(VSPW_CLASSES)
        redo = "restore it or delete it to use the standard VSPW classes"
        try:
            data = json.loads(label_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            raise DataError(f"{label_file} is not readable JSON ({exc}); {redo}") from None
        try:
            table = _LABEL_TABLE.validate_python(data)
        except ValidationError as exc:
            problems = "; ".join(line.strip() for line in describe_validation_error(exc).splitlines())
            raise DataError(
                f'{label_file} is not a JSON object of class name -> id ("wall": "1"): {problems}; {redo}'
            ) from None
        by_raw_id = {raw_id: name for name, raw_id in table.items()}
        by_raw_id.pop(0, None)  # "others" is not a class
        if sorted(by_raw_id) != list(range(1, NUM_CLASSES + 1)):
            raise DataError(
                f"{label_file} must give ids 1..{NUM_CLASSES} (plus 'others' = 0), found "
                f"{len(by_raw_id)} classes with ids {sorted(by_raw_id)[:5]}...; {redo}"
            )
        return [by_raw_id[raw_id] for raw_id in range(1, NUM_CLASSES + 1)]

    def frames(self, video: str) -> list[FrameRef]:
        """The frames of ``video`` sorted by name; ``mask_path`` is None when the video has no masks."""
        if video not in self._frames:
            self._frames[video] = self._list_frames(video)
        return self._frames[video]

    def _list_frames(self, video: str) -> list[FrameRef]:
        video_dir = self.root / "data" / video
        origin_dir, mask_dir = video_dir / "origin", video_dir / "mask"
        if not origin_dir.is_dir():
            raise DataError(f"video {video!r}: no frame folder {origin_dir}; every video needs origin/*.jpg")
        images: dict[str, Path] = {}
        for path in sorted(origin_dir.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.stem in images:
                raise DataError(
                    f"video {video!r}: frame {path.stem!r} exists twice ({images[path.stem].name} and "
                    f"{path.name}); keep one of them"
                )
            images[path.stem] = path
        if not images:
            raise DataError(f"video {video!r}: {origin_dir} holds no .jpg or .png frames")
        has_masks = mask_dir.is_dir()
        refs = []
        for name in sorted(images):
            mask_path = mask_dir / f"{name}.png" if has_masks else None
            if mask_path is not None and not mask_path.is_file():
                raise DataError(
                    f"video {video!r}, frame {images[name].name}: mask {mask_path} is missing; "
                    "restore it, or remove the frame from origin/"
                )
            refs.append(FrameRef(video, name, images[name], mask_path))
        return refs

    def load_image(self, ref: FrameRef) -> np.ndarray:
        """The frame as HxWx3 uint8 RGB."""
        with _open(ref, ref.image_path, "frame") as image:
            return np.array(image.convert("RGB"))

    def load_mask(self, ref: FrameRef) -> np.ndarray:
        """The mask as HxW uint8 train ids (255 = ignore)."""
        if ref.mask_path is None:
            raise DataError(
                f"video {ref.video!r}, frame {ref.name!r} has no mask (no mask/ folder: "
                "a test split?); evaluate or train on a split with masks"
            )
        with _open(ref, ref.mask_path, "mask") as image:
            if image.mode not in ("L", "P"):
                raise DataError(
                    f"video {ref.video!r}, frame {ref.name!r}: mask {ref.mask_path} has mode "
                    f"{image.mode!r}; masks must be single-channel label PNGs (mode 'L' or 'P') "
                    "holding raw class ids, not colour renderings"
                )
            raw = np.asarray(image)
        valid = VALID_RAW[raw]
        if not valid.all():
            bad_values, bad_counts = np.unique(raw[~valid], return_counts=True)
            raise DataError(
                f"video {ref.video!r}, frame {ref.name!r}: mask {ref.mask_path} has values outside "
                f"0..{NUM_CLASSES} and 255: {bad_values[:5].tolist()}"
                f"{' ...' if len(bad_values) > 5 else ''} ({int(bad_counts.sum())} pixels); "
                "masks must hold raw VSPW ids"
            )
        return raw_to_train(raw)

    def load(self, ref: FrameRef) -> tuple[np.ndarray, np.ndarray | None]:
        """Image and train-id mask (None without masks), checked to have the same size."""
        image = self.load_image(ref)
        if ref.mask_path is None:
            return image, None
        mask = self.load_mask(ref)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"video {ref.video!r}, frame {ref.name!r}: mask {ref.mask_path} is "
                f"{mask.shape[0]}x{mask.shape[1]} but frame {ref.image_path} is "
                f"{image.shape[0]}x{image.shape[1]} (HxW); regenerate the mask at the frame's size"
            )
        return image, mask

    def iter_video(self, video: str) -> Iterator[Frame]:
        """The frames of ``video`` in order, read one at a time."""
        for ref in self.frames(video):
            image, mask = self.load(ref)
            yield Frame(ref, image, mask)

    def __repr__(self) -> str:
        return f"VSPWDataset(root={str(self.root)!r}, split={self.split!r}, videos={len(self.videos)})"


def read_split_file(split_file: Path) -> list[str]:
    """The video folder names of a split file, one a line; blank lines and hidden names (``.DS_Store``) are skipped.

    Each name must be one plain folder name under ``data/``: no path separator, not ``.`` or
    ``..``, no drive, no NUL, so that nothing derived from it (predictions, statistics) can land
    outside the folders it is written to. The file must be UTF-8 (with or without a byte order
    mark). Errors name the file and line.
    """
    try:
        raw = split_file.read_bytes()
    except OSError as exc:
        raise DataError(f"split file {split_file}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")  # without the byte order mark Notepad writes, not part of the first name
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise DataError(
            f"split file {split_file}, line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
            "save it as UTF-8, one video folder name per line"
        ) from None
    videos = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        problem = _video_name_problem(name)
        if problem:
            raise DataError(
                f"split file {split_file}, line {number}: {name!r} is not a video folder name ({problem}); "
                f"write one folder name of {split_file.parent / 'data'} per line"
            )
        if not name.startswith("."):
            videos.append(name)
    if not videos:
        raise DataError(f"split file {split_file} lists no videos; write one video folder name per line")
    return videos


def _video_name_problem(name: str) -> str:
    if "\x00" in name:
        return "it holds a NUL character"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if name in (".", ".."):
        return "it names a folder itself, not a video in it"
    if PureWindowsPath(name).drive:
        return "it names a drive"
    return ""


@contextmanager
def _open(ref: FrameRef, path: Path, what: str) -> Iterator[Image.Image]:
    with decoded_image(
        path, f"video {ref.video!r}, frame {ref.name!r}: {what} {path}", "remove the frame from the video"
    ) as image:
        yield image


@contextmanager
def decoded_image(path: Path, where: str, remedy: str) -> Iterator[Image.Image]:
    """A decoded PIL image of ``path``, or a DataError: ``where`` names the file, ``remedy`` ends the advice."""
    if not path.is_file():
        raise DataError(f"{where} is missing; restore the file or {remedy}")
    if path.stat().st_size == 0:
        raise DataError(f"{where} is empty (0 bytes); re-extract it or {remedy}")
    try:
        image = Image.open(path)
        image.load()  # decode now so that truncated files fail here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{where} cannot be decoded ({exc}); re-extract it or {remedy}") from exc
    try:
        yield image
    finally:
        image.close()


class TrainFrames(torch.utils.data.Dataset):
    """Every annotated frame of a split as ``(normalized image (3, H, W), int64 mask (H, W))``.

    Augmentation randomness comes from ``np.random.default_rng((seed, epoch, index))``, so
    a sample is the same whatever the number of loader workers. Call :meth:`set_epoch`
    before iterating each epoch (workers copy the dataset when iteration starts).
    """

    def __init__(self, dataset: VSPWDataset, transforms: Transform | None, seed: int = 0) -> None:
        self.dataset = dataset
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0
        self.refs = [ref for video in dataset.videos for ref in dataset.frames(video)]
        unannotated = sorted({ref.video for ref in self.refs if ref.mask_path is None})
        if unannotated:
            raise DataError(
                f"split {dataset.split!r} of {dataset.root}: videos without masks cannot be "
                f"trained on: {', '.join(unannotated[:5])}{' ...' if len(unannotated) > 5 else ''}; "
                "train on a split with a mask/ folder in every video"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.dataset.load(self.refs[index])
        if self.transforms is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, mask = self.transforms(image, mask, rng)
        return normalize(image), torch.from_numpy(mask.astype(np.int64))
