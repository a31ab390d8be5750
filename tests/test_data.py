"""VSPW reader: layout, label shift, class table, every bad-input error, and the training dataset."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo_core.data.classes import PALETTE, VSPW_CLASSES, palette_bytes
from zoo_core.data.synth import synthesize
from zoo_core.data.transforms import build_transforms
from zoo_core.data.vspw import TrainFrames, VSPWDataset, normalize, raw_to_train
from zoo_core.errors import DataError


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("synth") / "vspw", videos=2, frames=3, size=(32, 48)).root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A private copy that a test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "vspw"))


def first_train_video(root: Path) -> str:
    return (root / "train.txt").read_text().split()[0]


def write_mask(path: Path, raw: np.ndarray, mode: str = "L") -> None:
    image = Image.fromarray(raw.astype(np.uint8))
    if mode == "P":
        image.putpalette(palette_bytes())
    assert image.mode == mode
    image.save(path)


def test_class_table_and_palette_match_the_published_lists():
    assert len(VSPW_CLASSES) == len(set(VSPW_CLASSES)) == 124
    assert VSPW_CLASSES[:3] == ("wall", "ceiling", "door")
    assert VSPW_CLASSES[28] == "sky" and VSPW_CLASSES[60] == "person" and VSPW_CLASSES[-1] == "train"
    assert len(PALETTE) == 124
    assert PALETTE[:4] == ((120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50))
    assert PALETTE[123] == (133, 255, 0)
    flat = palette_bytes()
    assert len(flat) == 768 and flat[:6] == [120, 120, 120, 180, 120, 120]
    assert flat[123 * 3 : 124 * 3] == [133, 255, 0] and flat[255 * 3 :] == [0, 0, 0]


def test_raw_to_train_shift():
    raw = np.array([[0, 1, 2], [61, 124, 255]], dtype=np.uint8)
    expected = np.array([[255, 0, 1], [60, 123, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(raw_to_train(raw), expected)
    assert raw_to_train(raw).dtype == np.uint8


def test_split_file_without_trailing_newline_and_with_hidden_and_blank_lines(root: Path):
    videos = (root / "train.txt").read_text().split() + (root / "val.txt").read_text().split()
    (root / "mixed.txt").write_text(f".DS_Store\n{videos[0]}\n\n  \n.hidden\n{videos[1]}")
    dataset = VSPWDataset(root, "mixed")
    assert dataset.videos == videos[:2]
    assert dataset.split == "mixed" and dataset.root == root


def test_missing_split_lists_the_available_ones(root: Path):
    with pytest.raises(DataError, match=r"split 'trian' not found.*test, train, val"):
        VSPWDataset(root, "trian")


def test_split_naming_a_missing_video(root: Path):
    (root / "train.txt").write_text("ghost_video\n")
    with pytest.raises(DataError) as info:
        VSPWDataset(root, "train")
    message = str(info.value)
    assert "train.txt" in message and "'ghost_video'" in message and str(root / "data" / "ghost_video") in message


def test_missing_root_says_how_to_make_one(tmp_path: Path):
    with pytest.raises(DataError, match="zoo data synth"):
        VSPWDataset(tmp_path / "nowhere", "train")


def test_class_names_come_from_the_label_json(root: Path):
    assert VSPWDataset(root, "train").class_names == list(VSPW_CLASSES)
    table = json.loads((root / "label_num_dic_final.json").read_text())
    table["wall"], table["ceiling"] = table["ceiling"], table["wall"]  # ids decide the order, not the file order
    (root / "label_num_dic_final.json").write_text(json.dumps(table))
    names = VSPWDataset(root, "train").class_names
    assert names[:2] == ["ceiling", "wall"] and "others" not in names and len(names) == 124
    (root / "label_num_dic_final.json").unlink()
    assert VSPWDataset(root, "train").class_names == list(VSPW_CLASSES)


def test_label_json_with_wrong_class_count(root: Path):
    table = json.loads((root / "label_num_dic_final.json").read_text())
    del table["train"]
    (root / "label_num_dic_final.json").write_text(json.dumps(table))
    with pytest.raises(DataError, match=r"label_num_dic_final.json must give ids 1..124.*123 classes"):
        VSPWDataset(root, "train")


def test_frames_are_sorted_and_masks_are_train_ids(root: Path):
    video = first_train_video(root)
    origin = root / "data" / video / "origin"
    # A .png frame counts too, and names decide the order.
    Image.open(origin / "00000001.jpg").save(origin / "00000000.png")
    raw = np.zeros((32, 48), dtype=np.uint8)
    raw[:, :10], raw[:, 10:20], raw[:, 20:30], raw[:, 30:] = 0, 1, 124, 255
    write_mask(root / "data" / video / "mask" / "00000000.png", raw, mode="P")
    dataset = VSPWDataset(root, "train")
    refs = dataset.frames(video)
    assert [r.name for r in refs] == ["00000000", "00000001", "00000002", "00000003"]
    assert refs[0].image_path.suffix == ".png" and refs[1].mask_path == root / "data" / video / "mask" / "00000001.png"
    image, mask = dataset.load(refs[0])
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    expected = np.zeros((32, 48), dtype=np.uint8)
    expected[:, :10], expected[:, 10:20], expected[:, 20:30], expected[:, 30:] = 255, 0, 123, 255
    np.testing.assert_array_equal(mask, expected)


def test_iter_video_streams_the_same_frames_as_load(root: Path):
    dataset = VSPWDataset(root, "train")
    video = dataset.videos[0]
    stream = dataset.iter_video(video)
    assert inspect.isgenerator(stream)
    frames = list(stream)
    assert [f.ref for f in frames] == dataset.frames(video)
    for frame in frames:
        np.testing.assert_array_equal(frame.image, np.asarray(Image.open(frame.ref.image_path).convert("RGB")))
        np.testing.assert_array_equal(frame.mask, raw_to_train(np.asarray(Image.open(frame.ref.mask_path))))


def test_test_split_has_no_masks(root: Path):
    dataset = VSPWDataset(root, "test")
    ref = dataset.frames(dataset.videos[0])[0]
    assert ref.mask_path is None
    image, mask = dataset.load(ref)
    assert image.shape == (32, 48, 3) and mask is None
    with pytest.raises(DataError, match="has no mask"):
        dataset.load_mask(ref)
    with pytest.raises(DataError, match="videos without masks"):
        TrainFrames(dataset, transforms=None)


def _first_ref(root: Path):
    dataset = VSPWDataset(root, "train")
    return dataset, dataset.frames(dataset.videos[0])[0]


def test_zero_byte_frame(root: Path):
    dataset, ref = _first_ref(root)
    ref.image_path.write_bytes(b"")
    with pytest.raises(DataError) as info:
        dataset.load(ref)
    message = str(info.value)
    assert repr(ref.video) in message and "00000001" in message and "0 bytes" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_frame(root: Path, damage: str):
    dataset, ref = _first_ref(root)
    data = ref.image_path.read_bytes()
    ref.image_path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a jpeg at all" * 20)
    with pytest.raises(DataError, match=rf"video '{ref.video}', frame '00000001': frame .* cannot be decoded"):
        dataset.load_image(ref)


def test_missing_frame_file_after_listing(root: Path):
    dataset, ref = _first_ref(root)
    ref.image_path.unlink()
    with pytest.raises(DataError, match="is missing"):
        dataset.load(ref)


def test_missing_mask(root: Path):
    video = first_train_video(root)
    (root / "data" / video / "mask" / "00000002.png").unlink()
    with pytest.raises(DataError) as info:
        VSPWDataset(root, "train").frames(video)
    message = str(info.value)
    assert repr(video) in message and "00000002.jpg" in message and "mask" in message and "missing" in message


def test_zero_byte_mask(root: Path):
    dataset, ref = _first_ref(root)
    ref.mask_path.write_bytes(b"")
    with pytest.raises(DataError, match=r"mask .*00000001.png is empty \(0 bytes\)"):
        dataset.load(ref)


def test_mask_size_different_from_frame(root: Path):
    dataset, ref = _first_ref(root)
    write_mask(ref.mask_path, np.ones((30, 48)))
    with pytest.raises(DataError, match=r"is 30x48 but frame .* is 32x48"):
        dataset.load(ref)


def test_mask_value_out_of_range(root: Path):
    dataset, ref = _first_ref(root)
    raw = np.ones((32, 48), dtype=np.uint8)
    raw[0, :7] = 200
    raw[1, :2] = 130
    write_mask(ref.mask_path, raw)
    with pytest.raises(DataError, match=r"values outside 0..124 and 255: \[130, 200\] \(9 pixels\)"):
        dataset.load(ref)


def test_rgb_mask_is_refused(root: Path):
    dataset, ref = _first_ref(root)
    Image.fromarray(np.ones((32, 48, 3), dtype=np.uint8)).save(ref.mask_path)
    with pytest.raises(DataError, match="mode 'RGB'.*single-channel"):
        dataset.load(ref)


def test_normalize_by_hand():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[0, 1] = (255, 0, 128)
    tensor = normalize(image)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    expected = [(255 - 123.675) / 58.395, (0 - 116.28) / 57.12, (128 - 103.53) / 57.375]
    torch.testing.assert_close(tensor[:, 0, 1], torch.tensor(expected))
    torch.testing.assert_close(tensor[:, 1, 2], torch.tensor([-123.675 / 58.395, -116.28 / 57.12, -103.53 / 57.375]))


def test_train_frames_without_augmentation_match_the_reader(pristine: Path):
    dataset = VSPWDataset(pristine, "train")
    frames = TrainFrames(dataset, transforms=None)
    refs = [ref for video in dataset.videos for ref in dataset.frames(video)]
    assert len(frames) == len(refs) == 3
    image, mask = frames[2]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 48)
    assert mask.dtype == torch.int64 and mask.shape == (32, 48)
    expected_image, expected_mask = dataset.load(refs[2])
    torch.testing.assert_close(image, normalize(expected_image))
    assert torch.equal(mask, torch.from_numpy(expected_mask.astype(np.int64)))


def test_train_frames_randomness_is_keyed_by_seed_epoch_and_index(pristine: Path):
    dataset = VSPWDataset(pristine, "train")
    transforms = build_transforms(
        [{"type": "multiscale"}, {"type": "random-crop", "size": [24, 40]}, {"type": "flip"}, {"type": "photometric"}]
    )
    frames = TrainFrames(dataset, transforms, seed=7)
    first = frames[1]
    assert first[0].shape == (3, 24, 40) and first[1].shape == (24, 40)
    again = TrainFrames(dataset, transforms, seed=7)[1]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], TrainFrames(dataset, transforms, seed=8)[1][0])
    frames.set_epoch(1)
    assert not torch.equal(first[0], frames[1][0])


def test_train_frames_do_not_depend_on_worker_count(pristine: Path):
    dataset = VSPWDataset(pristine, "train")
    frames = TrainFrames(dataset, build_transforms([{"type": "random-crop", "size": [16, 16]}, {"type": "flip"}]))
    frames.set_epoch(3)

    def batches(workers: int):
        loader = torch.utils.data.DataLoader(frames, batch_size=1, num_workers=workers)
        return [mask for _, mask in loader]

    single, parallel = batches(0), batches(2)
    assert all(torch.equal(a, b) for a, b in zip(single, parallel)) and len(single) == 3
