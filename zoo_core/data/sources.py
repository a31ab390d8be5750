"""Training data from several datasets: readers for COCO-Stuff, ADE20K and Cityscapes, the
labelled-fraction filter, and the mix of sources one training run draws from.

The readers expect each dataset's usual layout::

    COCO-Stuff 164k   ROOT/images/{train2017,val2017}/*.jpg
                      ROOT/stuffthingmaps_trainval2017/{train2017,val2017}/*.png   (or ROOT/annotations/...)
    ADE20K            ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg
                      ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png
                      (ROOT may also be ADEChallengeData2016 itself)
    Cityscapes        ROOT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
                      ROOT/gtFine/{train,val}/<city>/*_gtFine_labelIds.png

A split is the dataset's own folder name, ``train`` / ``val`` as aliases, or several
joined with ``+`` (``train+val``: the 3rd-place recipe trains on both). Label maps are
remapped to VSPW train ids, so every source yields what :meth:`VSPWDataset.load` yields and
the same augmentation applies.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..fileio import atomic_write_text
from ..interfaces import IGNORE_INDEX
from .classes import NUM_CLASSES, VSPW_CLASSES
from .vspw import TrainFrames, Transform, VSPWDataset, decoded_image, normalize

Log = Callable[[str], None]

SOURCE_TYPES = ("vspw", "coco-stuff", "ade20k", "cityscapes")
CACHE_VERSION = 1
# Separates the epoch-order random stream from the per-sample streams rng((seed, epoch, index)).
ORDER_STREAM = 0x0D5E


def cache_dir() -> Path:
    """Where the zoo keeps derived data: ``ZOO_CACHE_DIR``, else ``XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    if os.environ.get("ZOO_CACHE_DIR"):
        return Path(os.environ["ZOO_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "zoo"


# -- layouts --------------------------------------------------------------------------


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
        "images", ("stuffthingmaps_trainval2017", "annotations"), False, ".jpg", ".png"),
    "ade20k": Layout(
        "ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg and "
        "ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png (ROOT may be ADEChallengeData2016 itself)",
        {"train": "training", "val": "validation"},
        _ade20k_root,
        "images", ("annotations",), False, ".jpg", ".png"),
    "cityscapes": Layout(
        "ROOT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and ROOT/gtFine/{train,val}/<city>/*_gtFine_labelIds.png",
        {},
        lambda root: root if (root / "leftImg8bit").is_dir() else None,
        "leftImg8bit", ("gtFine",), True, "_leftImg8bit.png", "_gtFine_labelIds.png"),
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
        raise DataError(f"{kind} root {root} has {base / layout.images_dir} but no label folder "
                        f"({' or '.join(str(base / name) for name in layout.labels_dirs)}); "
                        f"the expected layout is {layout.description}")
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
            raise DataError(f"{kind} split {split!r}: no folder {folder}; splits found there: "
                            f"{', '.join(available) or '(none)'}{aliases}; the expected layout is {layout.description}")
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
        raise DataError(f"{kind} split {split!r}: {len(missing)} image(s) have no label map, e.g. {missing[0]} "
                        f"has no {labels_dir / missing[0].parent.relative_to(images_dir) / '...'}"
                        f"{layout.label_suffix}; restore the label maps or remove those images")
    if not pairs:
        raise DataError(f"{kind} split {split!r}: {images_dir} holds no *{layout.image_suffix} images; "
                        f"the expected layout is {layout.description}")
    return pairs


def _decoded(path: Path, what: str):
    return decoded_image(path, f"{what} {path}", "remove it from the dataset")


class RemappedImages:
    """The images of one split of COCO-Stuff, ADE20K or Cityscapes, label maps remapped to VSPW train ids."""

    def __init__(self, kind: str, root: str | Path, split: str, remapper: Any) -> None:
        if kind not in LAYOUTS:
            raise ConfigError(f"unknown dataset layout {kind!r}; choose one of: {', '.join(LAYOUTS)}")
        self.kind, self.root, self.split = kind, Path(root), split
        self.remapper = remapper
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
                raise DataError(f"{self.kind} label map {path} has mode {image.mode!r}; label maps must be "
                                "single-channel PNGs (mode 'L' or 'P') of class ids, not colour renderings")
            raw = np.asarray(image)
        known = getattr(self.remapper, "known", None)
        if known is not None and not known[raw].all():
            bad = np.unique(raw[~known[raw]])
            raise DataError(f"{self.kind} label map {path} has values its remapping table does not list: "
                            f"{bad[:5].tolist()}{' ...' if len(bad) > 5 else ''}; is it a {self.kind} label map?")
        return np.asarray(self.remapper(raw), dtype=np.uint8)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """HxWx3 uint8 RGB image and HxW uint8 train-id mask, like :meth:`VSPWDataset.load`."""
        pair = self.pairs[index]
        with _decoded(pair.image, f"{self.kind} image") as image:
            rgb = np.array(image.convert("RGB"))
        mask = self.load_mask(index)
        if mask.shape != rgb.shape[:2]:
            raise DataError(f"{self.kind} label map {pair.label} is {mask.shape[0]}x{mask.shape[1]} but image "
                            f"{pair.image} is {rgb.shape[0]}x{rgb.shape[1]} (HxW); they must match")
        return rgb, mask

    def __repr__(self) -> str:
        return f"RemappedImages({self.kind!r}, root={str(self.root)!r}, split={self.split!r}, images={len(self)})"


# -- the labelled-fraction filter -------------------------------------------------------


def labelled_subset(dataset: Any, keep: Callable[[np.ndarray], bool], threshold: float, fingerprint: str,
                    progress: bool = True, log: Log | None = None) -> list[int]:
    """The indices of ``dataset`` whose train-id mask passes ``keep`` (at least ``threshold`` labelled).

    Deciding reads every label map once, so the answer is cached as JSON in :func:`cache_dir`,
    keyed by the resolved root, the split, the file list, ``fingerprint`` (the remapping) and
    the threshold. ``dataset`` has ``kind``, ``root``, ``split``, ``keys()``, ``load_mask(i)``.
    """
    log = log or _stderr
    keys = dataset.keys()
    what = f"{dataset.kind} {dataset.split} ({dataset.root})"
    record = {
        "version": CACHE_VERSION,
        "kind": dataset.kind,
        "root": str(Path(dataset.root).resolve()),
        "split": dataset.split,
        "files": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "remapping": fingerprint,
        "threshold": threshold,
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / "labelled" / f"{dataset.kind}-{dataset.split.replace('+', '_')}-{digest[:20]}.json"
    kept = _read_keep_list(path, record, keys)
    if kept is None:
        bar = tqdm(range(len(keys)), desc=f"labelled {dataset.kind} {dataset.split}", unit="image",
                   disable=not progress, leave=False, dynamic_ncols=True)
        kept = [index for index in bar if keep(dataset.load_mask(index))]
        try:
            atomic_write_text(path, json.dumps({**record, "total": len(keys), "kept": [keys[i] for i in kept]}))
        except OSError as exc:
            log(f"warning: cannot write the cache {path} ({exc}); the next run scans {what} again")
        source = "scanned"
    else:
        source = f"cached in {path}"
    dropped = len(keys) - len(kept)
    log(f"{what}: kept {len(kept):,} of {len(keys):,} images, dropped {dropped:,} with less than "
        f"{threshold:.0%} labelled after remapping ({source})")
    return kept


def _read_keep_list(path: Path, record: dict, keys: list[str]) -> list[int] | None:
    """The cached indices, or None when there is no usable cache (missing, unreadable or stale)."""
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if any(cached.get(field) != value for field, value in record.items()) or cached.get("total") != len(keys):
            return None
        position = {key: index for index, key in enumerate(keys)}
        return [position[key] for key in cached["kept"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def remapping_fingerprint(remapper: Any) -> str:
    """What decides a mask's fate: the remapper's class and its lookup table."""
    kind = f"{type(remapper).__module__}.{type(remapper).__qualname__}"
    return hashlib.sha256(kind.encode() + np.asarray(remapper.lut, dtype=np.uint8).tobytes()).hexdigest()


# -- the training set -----------------------------------------------------------------


class _Part:
    """One source of the mix: the kept samples of a dataset with ``load(i)``."""

    def __init__(self, name: str, dataset: Any, indices: Sequence[int], ratio: float) -> None:
        self.name, self.dataset, self.indices, self.ratio = name, dataset, list(indices), ratio

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.load(self.indices[index])


class _VSPWFrames:
    """VSPW's annotated frames through :class:`TrainFrames` (its listing and checks), as a loadable dataset."""

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


class TrainSet(torch.utils.data.Dataset):
    """The training samples of every source, as ``(normalized image (3, H, W), int64 mask (H, W))``.

    Sample ``i`` is augmented with ``np.random.default_rng((seed, epoch, i))`` like
    :class:`TrainFrames`, so a single VSPW source gives exactly the samples of TrainFrames.
    :meth:`epoch_order` says which samples an epoch visits; with several sources it draws
    each source's share of ``len(self)`` from its ratio.
    """

    def __init__(self, parts: Sequence[_Part], transforms: Transform | None, seed: int = 0,
                 class_names: Sequence[str] = VSPW_CLASSES) -> None:
        if not parts:
            raise ConfigError("the training set needs at least one source")
        if seed < 0:
            raise ConfigError(f"train.seed must be 0 or more, got {seed}")
        self.parts = list(parts)
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0
        self.class_names = list(class_names)
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts]).tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(source, index within the source)`` of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is out of range 0..{len(self) - 1}")
        source = bisect.bisect_right(self.offsets, index) - 1
        return source, index - self.offsets[source]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        source, local = self.locate(index)
        image, mask = self.parts[source].load(local)
        if self.transforms is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, mask = self.transforms(image, mask, rng)
        return normalize(image), torch.from_numpy(mask.astype(np.int64))

    def shares(self) -> list[int]:
        """Samples per epoch of each source: ``len(self) * ratio / sum(ratios)``, rounded to sum exactly."""
        return proportional_counts(len(self), [part.ratio for part in self.parts])

    def epoch_order(self, epoch: int) -> list[int]:
        """The sample indices of epoch ``epoch``: a function of ``(seed, epoch)`` only, the same in every process.

        One source: a permutation of ``range(len(self))``. Several: source ``k`` contributes
        ``shares()[k]`` samples, without replacement while it has enough (a permutation of its
        samples, repeated when it is asked for more), and the whole is shuffled.
        """
        rng = np.random.default_rng(np.random.SeedSequence((self.seed, epoch), spawn_key=(ORDER_STREAM,)))
        if len(self.parts) == 1:
            return rng.permutation(len(self)).tolist()
        picks = []
        for part, offset, count in zip(self.parts, self.offsets, self.shares()):
            cycles = -(-count // len(part))
            picks.append(np.tile(rng.permutation(len(part)), cycles)[:count] + offset)
        order = np.concatenate(picks)
        rng.shuffle(order)
        return order.tolist()

    def __repr__(self) -> str:
        parts = ", ".join(f"{part.name}: {len(part)}" for part in self.parts)
        return f"TrainSet({parts}; seed={self.seed})"


def proportional_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``ratios`` by largest remainder (ties to the earlier source)."""
    exact = [total * ratio / sum(ratios) for ratio in ratios]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


def build_train_set(sources: Sequence[Any], default_root: str | Path | None, transforms: Transform | None,
                    seed: int, *, progress: bool = True, log: Log | None = None) -> TrainSet:
    """The training set of ``train.sources`` (objects with the fields of ``SourceSpec``)."""
    from ..plugins import get_catalog

    log = log or _stderr
    # Check every source's settings before any dataset is listed or scanned.
    resolved = []
    for number, source in enumerate(sources):
        field = f"train.sources[{number}]"
        if source.type not in SOURCE_TYPES:
            raise ConfigError(f"{field}.type: unknown source type {source.type!r}; choose one of: "
                              f"{', '.join(SOURCE_TYPES)}")
        remapper_name = source.remapper or source.type
        if source.type == "vspw" and remapper_name != "vspw":
            raise ConfigError(f"{field}.remapper: a vspw source reads VSPW ids; leave remapper out "
                              f"(found {source.remapper!r})")
        root = source.root if source.root is not None else (default_root if source.type == "vspw" else None)
        if root is None:
            where = "" if source.type == "vspw" else f" of the {source.type} dataset"
            raise ConfigError(f"{field}.root: give the folder{where} (vspw sources default to data.root)")
        args = {"min_labelled": source.min_labelled} if source.min_labelled > 0 else {}
        try:
            remapper = get_catalog().build("remapper", remapper_name, args)
        except ConfigError as exc:
            raise ConfigError(f"{field}.remapper: {exc}") from exc
        _check_lut(remapper, f"{field}.remapper ({remapper_name})")
        resolved.append((field, source, Path(root), remapper))

    parts, class_names = [], None
    for field, source, root, remapper in resolved:
        if source.type == "vspw":
            dataset: Any = _VSPWFrames(root, source.split)
            class_names = class_names or dataset.class_names
        else:
            dataset = RemappedImages(source.type, root, source.split, remapper)
        indices: Sequence[int] = range(len(dataset))
        if source.min_labelled > 0:
            indices = labelled_subset(dataset, remapper.keep, source.min_labelled, remapping_fingerprint(remapper),
                                      progress=progress, log=log)
        if not indices:
            raise DataError(f"{field}: no image of {source.type} {source.split} ({root}) has {source.min_labelled:.0%} "
                            f"of its pixels labelled after remapping; lower {field}.min_labelled")
        parts.append(_Part(f"{source.type} {source.split}", dataset, indices, source.ratio))
    train_set = TrainSet(parts, transforms, seed, class_names or VSPW_CLASSES)
    if len(parts) > 1:
        mix = ", ".join(f"{part.name} {len(part):,} images -> {share:,} per epoch"
                        for part, share in zip(parts, train_set.shares()))
        log(f"training mix ({len(train_set):,} samples per epoch): {mix}")
    return train_set


def _check_lut(remapper: Any, where: str) -> None:
    lut = np.asarray(getattr(remapper, "lut", None))
    if lut.shape != (256,) or not np.all((lut < NUM_CLASSES) | (lut == IGNORE_INDEX)):
        raise ConfigError(f"{where}: the remapper's lut must be 256 values of VSPW train ids 0..{NUM_CLASSES - 1} "
                          "or 255")
