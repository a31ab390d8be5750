"""Readers of COCO-Stuff, ADE20K and Cityscapes layouts, the labelled-fraction filter and its cache,
and the mix of training sources."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo_core.data.layouts import RemappedImages
from zoo_core.data.sampler import TrainSet, proportional_counts
from zoo_core.data.sources import build_train_set
from zoo_core.data.synth import synthesize
from zoo_core.data.vspw import TrainFrames, VSPWDataset
from zoo_core.errors import ConfigError, DataError
from zoo_core.pipeline.schema import SourceSpec
from zoo_core.plugins import get_catalog

H, W = 10, 10
# Hand-computed expectations: COCO value 0 (person) -> 60, 10 (fire hydrant) -> 255, 2 (car) -> 48,
# 255 -> 255; ADE 13 (person) -> 60, 0 -> 255; Cityscapes label id 26 (car) -> 48, 25 (rider) -> 60, 0 -> 255.


def _write(image_path: Path, label_path: Path, label: np.ndarray, seed: int = 0) -> None:
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*label.shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image_path)
    Image.fromarray(label.astype(np.uint8), mode="L").save(label_path)


def _labelled(count: int, value: int = 0, rest: int = 255) -> np.ndarray:
    """An HxW label map with ``count`` pixels of ``value`` and the others ``rest``."""
    label = np.full(H * W, rest, dtype=np.uint8)
    label[:count] = value
    return label.reshape(H, W)


def make_coco(root: Path, labels: dict[str, list[np.ndarray]], label_dir: str = "stuffthingmaps_trainval2017") -> Path:
    for split, maps in labels.items():
        for index, label in enumerate(maps):
            stem = f"{index:012d}"
            _write(root / "images" / split / f"{stem}.jpg", root / label_dir / split / f"{stem}.png", label, index)
    return root


def make_ade(root: Path, labels: dict[str, list[np.ndarray]]) -> Path:
    for split, maps in labels.items():
        for index, label in enumerate(maps):
            stem = f"ADE_{split}_{index + 1:08d}"
            base = root / "ADEChallengeData2016"
            _write(base / "images" / split / f"{stem}.jpg", base / "annotations" / split / f"{stem}.png", label, index)
    return root


def make_cityscapes(root: Path, labels: dict[str, list[np.ndarray]]) -> Path:
    for split, maps in labels.items():
        for index, label in enumerate(maps):
            city = ("aachen", "bochum")[index % 2]
            stem = f"{city}_{index:06d}_000019"
            _write(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                label,
                index,
            )
    return root


def _remapper(name: str, min_labelled: float = 0.0):
    return get_catalog().build("remapper", name, {"min_labelled": min_labelled})


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE_DIR", str(cache))
    return cache


# -- readers ------------------------------------------------------------------------------


def test_coco_stuff_reader(tmp_path: Path):
    label = np.array([[0, 10, 2, 255]] * 3, dtype=np.uint8)
    root = make_coco(tmp_path / "coco", {"train2017": [label, label], "val2017": [label]})
    images = RemappedImages("coco-stuff", root, "train", _remapper("coco-stuff"))
    assert len(images) == 2 and images.pairs[0].image.name == "000000000000.jpg"
    image, mask = images.load(0)
    assert image.dtype == np.uint8 and image.shape == (3, 4, 3)
    assert mask.dtype == np.uint8 and mask.tolist() == [[60, 255, 48, 255]] * 3
    assert len(RemappedImages("coco-stuff", root, "train2017+val2017", _remapper("coco-stuff"))) == 3
    # The alternative label folder name.
    alt = make_coco(tmp_path / "coco-alt", {"val2017": [label]}, label_dir="annotations")
    assert RemappedImages("coco-stuff", alt, "val", _remapper("coco-stuff")).load(0)[1].tolist() == mask.tolist()


def test_ade20k_reader_either_root(tmp_path: Path):
    label = np.array([[13, 0], [1, 150]], dtype=np.uint8)
    root = make_ade(tmp_path / "ade", {"training": [label], "validation": [label, label]})
    for given in (root, root / "ADEChallengeData2016"):
        images = RemappedImages("ade20k", given, "val", _remapper("ade20k"))
        assert len(images) == 2
        assert images.load(1)[1].tolist() == [[60, 255], [0, 43]]  # person, other, wall, flag
    assert len(RemappedImages("ade20k", root, "training+validation", _remapper("ade20k"))) == 3


def test_cityscapes_reader(tmp_path: Path):
    label = np.array([[26, 25, 0], [7, 8, 33]], dtype=np.uint8)
    root = make_cityscapes(tmp_path / "cs", {"train": [label, label, label]})
    images = RemappedImages("cityscapes", root, "train", _remapper("cityscapes"))
    assert len(images) == 3 and {p.image.parent.name for p in images.pairs} == {"aachen", "bochum"}
    assert images.pairs[0].label.name.endswith("_gtFine_labelIds.png")
    assert images.load(2)[1].tolist() == [[48, 60, 255], [18, 19, 51]]  # car, rider, -, road, sidewalk, bicycle


def test_reader_errors(tmp_path: Path):
    remapper = _remapper("coco-stuff")
    with pytest.raises(DataError, match="not a coco-stuff dataset in the expected layout: ROOT/images/"):
        RemappedImages("coco-stuff", tmp_path, "train", remapper)
    label = _labelled(100)
    root = make_coco(tmp_path / "coco", {"train2017": [label, label]})
    with pytest.raises(DataError, match=r"split 'val2017': no folder .*images/val2017; splits found there: train2017"):
        RemappedImages("coco-stuff", root, "val", remapper)
    (root / "stuffthingmaps_trainval2017" / "train2017" / "000000000001.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) have no label map, e.g. .*000000000001.jpg"):
        RemappedImages("coco-stuff", root, "train", remapper)
    with pytest.raises(DataError, match="the expected layout is ROOT/leftImg8bit"):
        RemappedImages("cityscapes", make_cityscapes(tmp_path / "cs", {}), "train", _remapper("cityscapes"))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"not a png at all", "cannot be decoded"),
        ("rgb", "has mode 'RGB'"),
        ("unknown", r"values its remapping table does not list: \[11\]"),
    ],
)
def test_bad_label_file_is_named(tmp_path: Path, content, message: str):
    root = make_coco(tmp_path / "coco", {"train2017": [_labelled(100)]})
    path = root / "stuffthingmaps_trainval2017" / "train2017" / "000000000000.png"
    if content == "rgb":
        Image.new("RGB", (W, H)).save(path)
    elif content == "unknown":
        Image.fromarray(_labelled(50, value=11), mode="L").save(path)  # 11: an unused COCO id
    else:
        path.write_bytes(content)
    images = RemappedImages("coco-stuff", root, "train", _remapper("coco-stuff"))
    with pytest.raises(DataError, match=f"coco-stuff label map .*000000000000.png.*{message}"):
        images.load(0)


# -- the 80% filter and its cache ----------------------------------------------------------


def _coco_79_80(tmp_path: Path) -> Path:
    # 79 person + 21 fire hydrant (dropped by the remapping): 79% labelled; 80 person + 20 unlabeled: 80%.
    return make_coco(tmp_path / "coco", {"train2017": [_labelled(79, rest=10), _labelled(80), _labelled(100)]})


def test_filter_drops_79_keeps_80(tmp_path: Path, capsys):
    root = _coco_79_80(tmp_path)
    train_set = build_train_set(
        [SourceSpec(type="coco-stuff", root=root, min_labelled=0.8)], None, None, 0, progress=False
    )
    part = train_set.parts[0]
    assert [part.dataset.pairs[i].image.name for i in part.indices] == ["000000000001.jpg", "000000000002.jpg"]
    assert "kept 2 of 3 images, dropped 1 with less than 80% labelled" in capsys.readouterr().err
    unfiltered = build_train_set([SourceSpec(type="coco-stuff", root=root)], None, None, 0, progress=False)
    assert len(unfiltered) == 3


def test_keep_list_cache_reused_and_invalidated(tmp_path: Path, _cache: Path, monkeypatch: pytest.MonkeyPatch):
    root = _coco_79_80(tmp_path)
    reads: list[int] = []
    original = RemappedImages.load_mask

    def counting(self, index):
        reads.append(index)
        return original(self, index)

    monkeypatch.setattr(RemappedImages, "load_mask", counting)
    messages: list[str] = []

    def build(threshold: float) -> TrainSet:
        return build_train_set(
            [SourceSpec(type="coco-stuff", root=root, min_labelled=threshold)],
            None,
            None,
            0,
            progress=False,
            log=messages.append,
        )

    assert len(build(0.8)) == 2 and len(reads) == 3
    files = list((_cache / "labelled").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["threshold"] == 0.8
    assert len(build(0.8)) == 2 and len(reads) == 3  # no label map read again
    assert "cached in" in messages[-1] and "dropped 1" in messages[-1]
    assert len(build(0.795)) == 2 and len(reads) == 6  # another threshold scans again
    assert len(build(0.5)) == 3 and len(reads) == 9
    # A damaged cache file is rescanned and rewritten, not an error.
    files[0].write_text("{not json")
    assert len(build(0.8)) == 2 and len(reads) == 12
    assert json.loads(files[0].read_text())["kept"] == [
        "stuffthingmaps_trainval2017/train2017/000000000001.png",
        "stuffthingmaps_trainval2017/train2017/000000000002.png",
    ]
    # A new image changes the file list, so the old keep list is not used.
    make_coco(tmp_path / "coco", {"train2017": [_labelled(100)] * 4})
    assert len(build(0.8)) == 4 and len(reads) == 16


def test_a_split_cannot_put_the_cache_file_outside_the_cache(tmp_path: Path, _cache: Path):
    # The split's text used to be the file name: labelled/coco-stuff-x/../../../coco/shared-<digest>.json is
    # tmp_path/coco/shared-<digest>.json. The folders x/ exist, so the split still reaches the images.
    root = tmp_path / "data" / "coco"
    for stem, label in (("a", _labelled(100)), ("b", _labelled(10))):
        _write(root / "shared" / f"{stem}.jpg", root / "shared" / f"{stem}.png", label)
    (root / "images" / "x").mkdir(parents=True)
    (root / "stuffthingmaps_trainval2017" / "x").mkdir(parents=True)
    split = "x/../../../coco/shared"
    for _ in range(2):  # scanned, then read from the cache
        train_set = build_train_set(
            [SourceSpec(type="coco-stuff", root=root, split=split, min_labelled=0.8)], None, None, 0, progress=False
        )
        assert [train_set.parts[0].dataset.pairs[i].image.name for i in train_set.parts[0].indices] == ["a.jpg"]
    written = sorted(tmp_path.rglob("*.json"))
    assert [p.parent for p in written] == [_cache / "labelled"]
    assert written[0].name.startswith("coco-stuff-x_.._.._.._coco_shared-")


def test_nothing_left_after_the_filter(tmp_path: Path):
    root = make_coco(tmp_path / "coco", {"train2017": [_labelled(10)]})
    with pytest.raises(DataError, match=r"train.sources\[0\]: no image .* lower train.sources\[0\].min_labelled"):
        build_train_set([SourceSpec(type="coco-stuff", root=root, min_labelled=0.8)], None, None, 0, progress=False)


# -- the training set and the mix ----------------------------------------------------------


@pytest.fixture
def vspw_root(tmp_path: Path) -> Path:
    synthesize(tmp_path / "vspw", videos=3, frames=3, size=(32, 48), seed=1)  # 2 train videos: 6 frames
    return tmp_path / "vspw"


def _shift(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """A transform whose result shows the random draw: roll both by a random offset."""
    offset = int(rng.integers(0, image.shape[1]))
    return np.roll(image, offset, axis=1), np.roll(mask, offset, axis=1)


def test_single_vspw_source_equals_train_frames(vspw_root: Path):
    train_set = build_train_set([SourceSpec(type="vspw")], vspw_root, _shift, 7, progress=False)
    frames = TrainFrames(VSPWDataset(vspw_root, "train"), _shift, 7)
    assert len(train_set) == len(frames) == 6
    for epoch in (0, 3):
        train_set.set_epoch(epoch)
        frames.set_epoch(epoch)
        for index in range(len(frames)):
            image, mask = train_set[index]
            expected_image, expected_mask = frames[index]
            assert torch.equal(image, expected_image) and torch.equal(mask, expected_mask)
            assert image.dtype == torch.float32 and mask.dtype == torch.int64
    assert sorted(train_set.epoch_order(0)) == list(range(6))
    assert train_set.class_names == VSPWDataset(vspw_root, "train").class_names


@pytest.mark.parametrize(
    "total, ratios, expected",
    [
        (10, [1, 3], [3, 7]),  # 2.5 / 7.5: the tie goes to the first source
        (10, [1, 1, 1], [4, 3, 3]),
        (7, [2, 1], [5, 2]),  # 4.67 / 2.33
        (5, [0.5], [5]),
        (3, [1, 1000], [0, 3]),
    ],
)
def test_proportional_counts(total: int, ratios: list[float], expected: list[int]):
    assert proportional_counts(total, ratios) == expected


def test_mixed_sources_follow_their_ratios(tmp_path: Path, vspw_root: Path):
    coco = make_coco(tmp_path / "coco", {"train2017": [_labelled(100)] * 4})
    specs = [SourceSpec(type="vspw", ratio=1), SourceSpec(type="coco-stuff", root=coco, split="train", ratio=3)]

    def build(seed: int) -> TrainSet:
        return build_train_set(specs, vspw_root, None, seed, progress=False, log=lambda message: None)

    train_set = build(5)
    assert len(train_set) == 10 and train_set.shares() == [3, 7]  # 10 * 1/4 = 2.5 -> 3, 10 * 3/4 = 7.5 -> 7
    for epoch in range(3):
        order = train_set.epoch_order(epoch)
        assert len(order) == 10
        per_source = Counter(train_set.locate(index)[0] for index in order)
        assert per_source == {0: 3, 1: 7}
        vspw = [index for index in order if index < 6]
        assert len(set(vspw)) == 3  # without replacement while the source has enough
        coco_counts = Counter(index for index in order if index >= 6)
        assert set(coco_counts) == {6, 7, 8, 9} and sorted(coco_counts.values()) == [1, 2, 2, 2]  # cycles
    # The same in another process (a fresh build), different across epochs and seeds.
    assert build(5).epoch_order(1) == train_set.epoch_order(1)
    assert train_set.epoch_order(0) != train_set.epoch_order(1)
    assert build(6).epoch_order(1) != train_set.epoch_order(1)
    # Samples of both sources come out as the trainer expects.
    image, mask = train_set[train_set.epoch_order(0)[0]]
    assert image.dim() == 3 and image.shape[0] == 3 and mask.shape == image.shape[1:] and mask.dtype == torch.int64
    image, mask = train_set[9]
    assert mask.tolist() == [[60] * W] * H


def test_order_does_not_replay_a_sample_stream(vspw_root: Path):
    # rng((seed, epoch)) equals rng((seed, epoch, 0)), the augmentation stream of sample 0 in that epoch.
    train_set = build_train_set([SourceSpec(type="vspw")], vspw_root, None, 3, progress=False)
    assert train_set.epoch_order(2) != np.random.default_rng((3, 2)).permutation(len(train_set)).tolist()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "kitti"}, r"train.sources\[0\].type: unknown source type 'kitti'"),
        ({"type": "ade20k"}, r"train.sources\[0\].root: give the folder of the ade20k dataset"),
        ({"type": "vspw", "remapper": "coco-stuff"}, r"train.sources\[0\].remapper: a vspw source reads VSPW ids"),
        ({"type": "ade20k", "root": ".", "remapper": "nope"}, r"train.sources\[0\].remapper: unknown remapper 'nope'"),
    ],
)
def test_source_config_errors(spec: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        build_train_set([SourceSpec(**spec)], None, None, 0, progress=False)


@pytest.mark.slow
def test_zoo_train_on_a_mix(tmp_path: Path, run_zoo, _cache: Path):
    import yaml

    synthesize(tmp_path / "vspw", videos=3, frames=2, size=(64, 96), seed=2)
    full, sparse = np.zeros((64, 96), dtype=np.uint8), np.full((64, 96), 255, dtype=np.uint8)  # person / unlabeled
    coco = make_coco(tmp_path / "coco", {"train2017": [full, sparse, full]})
    pipeline = {
        "data": {"root": str(tmp_path / "vspw")},
        "model": {
            "num_classes": 124,
            "backbone": {"type": "timm", "args": {"model_name": "resnet10t", "out_indices": [1, 2, 3]}},
            "heads": [
                {
                    "type": "fcn",
                    "args": {"in_index": [0, 1, 2], "input_transform": "resize_concat", "channels": 8, "num_convs": 1},
                }
            ],
        },
        "train": {
            "max_iters": 2,
            "batch_size": 2,
            "warmup_iters": 0,
            "checkpoint_every": 0,
            "transforms": [{"type": "random-crop", "size": [48, 64]}],
            "sources": [
                {"type": "vspw"},
                {"type": "coco-stuff", "root": str(coco), "split": "train", "ratio": 0.5, "min_labelled": 0.8},
            ],
        },
        "runtime": {"amp": "none", "progress": False, "threads": 1},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(pipeline))
    result = run_zoo("train", tmp_path / "train.yaml", "--out", tmp_path / "run", env={"ZOO_CACHE_DIR": str(_cache)})
    assert result.returncode == 0, result.stderr
    assert "kept 2 of 3 images, dropped 1" in result.stderr
    assert (
        "training mix (6 samples per epoch): vspw train 4 images -> 4 per epoch, coco-stuff train 2 images -> 2"
        in result.stderr
    )
    assert (tmp_path / "run" / "model.safetensors").is_file() and list((_cache / "labelled").glob("*.json"))


def test_a_failing_remapper_is_reported_as_a_component_naming_the_file(tmp_path):
    from zoo_core.data.layouts import RemappedImages
    from zoo_core.data.sources import _reported
    from zoo_core.errors import ComponentError

    class Faulty:
        lut = np.full(256, 255, dtype=np.uint8)

        def __call__(self, mask):
            raise ValueError("no table for this mask")

        def keep(self, mask):
            raise KeyError("threshold")

    root = make_coco(tmp_path / "coco", {"train2017": [np.array([[0, 1], [1, 1]], dtype=np.uint8)]})
    images = RemappedImages("coco-stuff", root, "train", Faulty(), "remapper 'faulty' (zoo-faulty 0.1)")
    with pytest.raises(ComponentError) as err:
        images.load_mask(0)
    assert str(err.value).startswith("remapper 'faulty' (zoo-faulty 0.1) failed on ")
    assert str(err.value).endswith("ValueError: no table for this mask")
    with pytest.raises(ComponentError, match=r"^remapper 'faulty' \(zoo-faulty 0.1\) failed: KeyError: 'threshold'$"):
        _reported(Faulty().keep, "remapper 'faulty' (zoo-faulty 0.1)")(np.zeros((2, 2), np.uint8))
