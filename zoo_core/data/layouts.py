"""Readers of the datasets a training run can draw from, each in its usual layout::

    COCO-Stuff 164k   ROOT/images/{train2017,val2017}/*.jpg
                      ROOT/stuffthingmaps_trainval2017/{train2017,val2017}/*.png   (or ROOT/annotations/...)
    ADE20K            ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg
                      ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png
                      (ROOT may also be ADEChallengeData2016 itself)
    Cityscapes        ROOT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
                      ROOT/gtFine/{train,val}/<city>/*_gtFine_labelIds.png

and VSPW's own annotated frames. A split is the dataset's own folder name, ``train`` / ``val``
as aliases, or several joined with ``+`` (``train+val``: the 3rd-place recipe trains on both).
Label maps are remapped to VSPW train ids, so every reader yields what
:meth:`VSPWDataset.load` yields and the same augmentation applies.

Each reader has ``kind``, ``root``, ``split``, ``len()``, ``keys()`` (names for caches),
``load_mask(i)`` and ``load(i)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, component_errors
from ..interfaces import Remapper
from .vspw import TrainFrames, VSPWDataset, decoded_image


@dataclass(frozen=True)
class Pair:
    """An image and its label map; ``key`` (the label path relative to the root) names it in caches."""

    image: Path
    label: Path
    key: str


@dataclass(frozen=True)
class Layout:
    description: str  # printed when the folders are missing
    aliases: dict[str, str]  # train / val -> the dataset's own split name
    find_root: Callable[[Path], Path | None]  # the folder holding the split folders, or None
    images_dir: str
    labels_dirs: tuple[str, ...]  # the first that exists is used
    nested: bool  # one more folder level (Cityscapes cities)
    image_suffix: str  # image name = stem + image_suffix
    label_suffix: str  # label name = stem + label_suffix


def _ade20k_root(root: Path) -> Path | None:
    for candidate in (root / "ADEChallengeData2016", root):
        if (candidate / "images").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    return None


LAYOUTS: dict[str, Layout] = {
    "coco-stuff": Layout(
        "ROOT/images/{train2017,val2017}/*.jpg and ROOT/stuffthingmaps_trainval2017/{train2017,val2017}/*.png "
        "(or ROOT/annotations/{train2017,val2017}/*.png)",
        {"train": "train2017", "val": "val2017"},
        lambda root: root if (root / "images").is_dir() else None,
        "images",
        ("stuffthingmaps_trainval2017", "annotations"),
        False,
        ".jpg",
        ".png",
    ),
    "ade20k": Layout(
        "ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg and "
        "ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png (ROOT may be ADEChallengeData2016 itself)",
        {"train": "training", "val": "validation"},
        _ade20k_root,
        "images",
        ("annotations",),
        False,
        ".jpg",
        ".png",
    ),
    "cityscapes": Layout(
        "ROOT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and "
        "ROOT/gtFine/{train,val}/<city>/*_gtFine_labelIds.png",
        {},
        lambda root: root if (root / "leftImg8bit").is_dir() else None,
        "leftImg8bit",
        ("gtFine",),
        True,
        "_leftImg8bit.png",
        "_gtFine_labelIds.png",
    ),
}


def list_pairs(kind: str, root: str | Path, split: str) -> list[Pair]:
    """The (image, label) pairs of ``split`` (``a+b`` joins splits) of a dataset in its usual layout, sorted."""
    layout = LAYOUTS[kind]
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{kind} root {root} is not a directory; the expected layout is {layout.description}")
    base = layout.find_root(root)
    if base is None:
        raise DataError(f"{root} is not a {kind} dataset in the expected layout: {layout.description}")
    labels_base = next((base / name for name in layout.labels_dirs if (base / name).is_dir()), None)
    if labels_base is None:
        raise DataError(
            f"{kind} root {root} has {base / layout.images_dir} but no label folder "
            f"({' or '.join(str(base / name) for name in layout.labels_dirs)}); "
            f"the expected layout is {layout.description}"
        )
    pairs: list[Pair] = []
    for part in split.split("+"):
        pairs += _split_pairs(kind, layout, root, base, labels_base, layout.aliases.get(part, part))
    return pairs


def _split_pairs(kind: str, layout: Layout, root: Path, base: Path, labels_base: Path, split: str) -> list[Pair]:
    images_dir, labels_dir = base / layout.images_dir / split, labels_base / split
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            available = sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) if folder.parent.is_dir() else []
            aliases = "".join(f", {alias} (= {name})" for alias, name in layout.aliases.items())
            raise DataError(
                f"{kind} split {split!r}: no folder {folder}; splits found there: "
                f"{', '.join(available) or '(none)'}{aliases}; the expected layout is {layout.description}"
            )
    folders = sorted(p for p in images_dir.iterdir() if p.is_dir()) if layout.nested else [images_dir]
    pairs, missing = [], []
    for folder in folders:
        for image in sorted(folder.iterdir()):
            if image.name.startswith(".") or not image.name.endswith(layout.image_suffix):
                continue
            stem = image.name[: -len(layout.image_suffix)]
            label = labels_dir / folder.relative_to(images_dir) / f"{stem}{layout.label_suffix}"
            if not label.is_file():
                missing.append(image)
                continue
            pairs.append(Pair(image, label, label.relative_to(root).as_posix()))
    if missing:
        raise DataError(
            f"{kind} split {split!r}: {len(missing)} image(s) have no label map, e.g. {missing[0]} "
            f"has no {labels_dir / missing[0].parent.relative_to(images_dir) / '...'}"
            f"{layout.label_suffix}; restore the label maps or remove those images"
        )
    if not pairs:
        raise DataError(
            f"{kind} split {split!r}: {images_dir} holds no *{layout.image_suffix} images; "
            f"the expected layout is {layout.description}"
        )
    return pairs


def _decoded(path: Path, what: str):
    return decoded_image(path, f"{what} {path}", "remove it from the dataset")


class RemappedImages:
    """The images of one split of COCO-Stuff, ADE20K or Cityscapes, label maps remapped to VSPW train ids."""

    def __init__(
        self, kind: str, root: str | Path, split: str, remapper: Remapper, remapper_label: str = "remapper"
    ) -> None:
        if kind not in LAYOUTS:
            raise ConfigError(f"unknown dataset layout {kind!r}; choose one of: {', '.join(LAYOUTS)}")
        self.kind, self.root, self.split = kind, Path(root), split
        self.remapper = remapper
        self.remapper_label = remapper_label  # how an error of the remapper names it
        self.pairs = list_pairs(kind, self.root, split)

    def __len__(self) -> int:
        return len(self.pairs)

    def keys(self) -> list[str]:
        return [pair.key for pair in self.pairs]

    def load_mask(self, index: int) -> np.ndarray:
        """The label map of sample ``index`` as HxW uint8 VSPW train ids (255 = ignore)."""
        path = self.pairs[index].label
        with _decoded(path, f"{self.kind} label map") as image:
            if image.mode not in ("L", "P"):
                raise DataError(
                    f"{self.kind} label map {path} has mode {image.mode!r}; label maps must be "
                    "single-channel PNGs (mode 'L' or 'P') of class ids, not colour renderings"
                )
            raw = np.asarray(image)
        known = getattr(self.remapper, "known", None)
        if known is not None and not known[raw].all():
            bad = np.unique(raw[~known[raw]])
            raise DataError(
                f"{self.kind} label map {path} has values its remapping table does not list: "
                f"{bad[:5].tolist()}{' ...' if len(bad) > 5 else ''}; is it a {self.kind} label map?"
            )
        with component_errors(self.remapper_label, f"on {path}"):
            return np.asarray(self.remapper(raw), dtype=np.uint8)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """HxWx3 uint8 RGB image and HxW uint8 train-id mask, like :meth:`VSPWDataset.load`."""
        pair = self.pairs[index]
        with _decoded(pair.image, f"{self.kind} image") as image:
            rgb = np.array(image.convert("RGB"))
        mask = self.load_mask(index)
        if mask.shape != rgb.shape[:2]:
            raise DataError(
                f"{self.kind} label map {pair.label} is {mask.shape[0]}x{mask.shape[1]} but image "
                f"{pair.image} is {rgb.shape[0]}x{rgb.shape[1]} (HxW); they must match"
            )
        return rgb, mask

    def __repr__(self) -> str:
        return f"RemappedImages({self.kind!r}, root={str(self.root)!r}, split={self.split!r}, images={len(self)})"


class VSPWFrames:
    """VSPW's annotated frames through :class:`TrainFrames` (its listing and checks), as a reader like the others."""

    def __init__(self, root: Path, split: str) -> None:
        self.frames = TrainFrames(VSPWDataset(root, split), None)
        self.kind, self.root, self.split = "vspw", Path(root), split
        self.class_names = self.frames.dataset.class_names

    def __len__(self) -> int:
        return len(self.frames)

    def keys(self) -> list[str]:
        return [f"{ref.video}/{ref.name}" for ref in self.frames.refs]

    def load_mask(self, index: int) -> np.ndarray:
        return self.frames.dataset.load_mask(self.frames.refs[index])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.frames.dataset.load(self.frames.refs[index])  # type: ignore[return-value]  # masks checked
