"""The synthetic VSPW-format dataset and the ``zoo data synth`` command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from zoo_core.data.classes import VSPW_CLASSES
from zoo_core.data.command import data_group
from zoo_core.data.synth import synthesize
from zoo_core.data.vspw import VSPWDataset
from zoo_core.errors import ConfigError, DataError


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def raw_masks(root: Path, video: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((root / "data" / video / "mask").glob("*.png"))]


def test_cli_writes_a_vspw_layout(tmp_path: Path):
    out = tmp_path / "synth"
    result = CliRunner().invoke(data_group, ["synth", str(out), "--videos", "3", "--frames", "5", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "train.txt: 2 video(s)" in result.output
    assert "val.txt: 1 video(s)" in result.output and "test.txt: 1 video(s), no masks" in result.output

    splits = {name: (out / f"{name}.txt").read_text().split() for name in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [2, 1, 1]
    assert len({v for videos in splits.values() for v in videos}) == 4
    table = json.loads((out / "label_num_dic_final.json").read_text())
    assert len(table) == 125 and table["others"] == "0" and table["wall"] == "1" and table["train"] == "124"
    for video in splits["train"] + splits["val"]:
        frames = sorted((out / "data" / video / "origin").glob("*.jpg"))
        masks = sorted((out / "data" / video / "mask").glob("*.png"))
        assert [p.name for p in frames] == [f"{i:08d}.jpg" for i in range(1, 6)]
        assert [p.stem for p in masks] == [p.stem for p in frames]
        with Image.open(frames[0]) as image, Image.open(masks[0]) as mask:
            assert image.mode == "RGB" and image.size == (96, 64)
            assert mask.mode in ("L", "P") and mask.size == (96, 64)
    test_video = out / "data" / splits["test"][0]
    assert len(list((test_video / "origin").glob("*.jpg"))) == 5 and not (test_video / "mask").exists()

    dataset = VSPWDataset(out, "train")
    assert dataset.class_names == list(VSPW_CLASSES)
    assert all(frame.mask.shape == (64, 96) for frame in dataset.iter_video(dataset.videos[0]))


def test_labels_hold_classes_others_and_void(tmp_path: Path):
    root = synthesize(tmp_path / "s", videos=4, frames=6, seed=1).root
    videos = (root / "train.txt").read_text().split() + (root / "val.txt").read_text().split()
    class_sets = []
    for video in videos:
        masks = raw_masks(root, video)
        values = set(np.unique(np.stack(masks)).tolist())
        assert values <= set(range(125)) | {255}
        assert 0 in values and 255 in values  # "others" and void, in every video
        class_sets.append(frozenset(values - {0, 255}))
        assert len(class_sets[-1]) >= 4
        # The camera pans and objects move: no two consecutive frames have the same labels.
        assert all(not np.array_equal(a, b) for a, b in zip(masks, masks[1:]))
    assert len(set(class_sets)) == len(class_sets)  # each video has its own classes or layout


def test_void_surrounds_objects(tmp_path: Path):
    root = synthesize(tmp_path / "s", videos=2, frames=2, seed=2).root
    mask = raw_masks(root, "0_synth_s2")[0]
    things = {VSPW_CLASSES.index(n) + 1 for n in ("car", "person", "bus", "bicycle", "dog", "ship_or_boat")}
    void = mask == 255
    # Every void pixel touches an object pixel (the border is drawn around objects only).
    near_thing = np.zeros_like(void)
    padded = np.pad(np.isin(mask, list(things)), 2)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near_thing |= padded[2 + dy : 2 + dy + mask.shape[0], 2 + dx : 2 + dx + mask.shape[1]]
    assert void.any() and near_thing[void].all()


def test_classes_look_different(tmp_path: Path):
    """Each class has its own colour: per-class mean colours differ, so the data is learnable."""
    root = synthesize(tmp_path / "s", videos=3, frames=3, seed=5).root
    means: dict[int, list[np.ndarray]] = {}
    for video in (root / "train.txt").read_text().split():
        for mask_path in sorted((root / "data" / video / "mask").glob("*.png")):
            mask = np.asarray(Image.open(mask_path))
            image = np.asarray(Image.open(root / "data" / video / "origin" / f"{mask_path.stem}.jpg"), dtype=float)
            for value in np.unique(mask):
                if value != 255 and (mask == value).sum() > 30:
                    means.setdefault(int(value), []).append(image[mask == value].mean(0))
    centres = np.array([np.mean(v, 0) for v in means.values()])
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert len(centres) >= 5 and distances.min() > 15


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path):
    first = all_files(synthesize(tmp_path / "a", videos=2, frames=4, seed=3).root)
    again = all_files(synthesize(tmp_path / "b", videos=2, frames=4, seed=3).root)
    other = all_files(synthesize(tmp_path / "c", videos=2, frames=4, seed=4).root)
    assert first == again
    first_frame = next(k for k in first if k.endswith("00000001.jpg"))
    assert first_frame.replace("s3", "s4") in other
    assert first[first_frame] != other[first_frame.replace("s3", "s4")]


def test_fast_and_other_sizes(tmp_path: Path):
    start = time.perf_counter()
    synthesize(tmp_path / "small", videos=2, frames=50)
    assert time.perf_counter() - start < 3.0
    root = synthesize(tmp_path / "wide", videos=2, frames=2, size=(120, 214)).root
    with Image.open(root / "data" / "0_synth_s0" / "origin" / "00000002.jpg") as image:
        assert image.size == (214, 120)


def test_refuses_a_non_empty_directory_unless_forced(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty"):
        synthesize(tmp_path / "out", videos=2, frames=1)
    result = CliRunner().invoke(data_group, ["synth", str(tmp_path / "out"), "--frames", "1", "--force"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine" and (tmp_path / "out" / "train.txt").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"videos": 1}, "videos: need at least 2"),
        ({"frames": 0}, "frames: need at least 1"),
        ({"size": (8, 96)}, "size: frames must be at least 16x16"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        synthesize(tmp_path / "out", **kwargs)


def test_bad_size_option_is_a_usage_error(tmp_path: Path):
    result = CliRunner().invoke(data_group, ["synth", str(tmp_path / "out"), "--size", "64by96"])
    assert result.exit_code == 2 and "HEIGHTxWIDTH" in result.output


def test_zoo_command_line(run_zoo, tmp_path: Path):
    result = run_zoo("data", "synth", tmp_path / "cli", "--videos", "2", "--frames", "2", "--size", "32x48")
    assert result.returncode == 0, result.stderr
    assert "wrote a synthetic VSPW dataset" in result.stdout
    with Image.open(tmp_path / "cli" / "data" / "0_synth_s0" / "mask" / "00000001.png") as mask:
        assert mask.size == (48, 32)
    again = run_zoo("data", "synth", tmp_path / "cli", "--frames", "1")
    assert again.returncode == 1 and "error:" in again.stderr and "is not empty" in again.stderr
    assert "Traceback" not in again.stderr
