"""``zoo data stats``: per-class pixel, frame and video counts of a split, and the stats.json reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo_core.data.stats import compute_stats, read_stats, write_stats
from zoo_core.data.synth import synthesize
from zoo_core.errors import DataError
from zoo_core.plugins import get_catalog


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats_synth")
    synthesize(root, videos=4, frames=5, size=(64, 96), seed=1)
    return root


def write_video(root: Path, video: str, raw_masks: list[list[list[int]]]) -> None:
    """A video of the VSPW layout with the given raw-id masks (and black frames)."""
    for sub in ("origin", "mask"):
        (root / "data" / video / sub).mkdir(parents=True, exist_ok=True)
    for t, raw in enumerate(raw_masks):
        raw = np.array(raw, dtype=np.uint8)
        Image.fromarray(np.zeros((*raw.shape, 3), np.uint8)).save(root / "data" / video / "origin" / f"{t:08d}.jpg")
        Image.fromarray(raw, mode="L").save(root / "data" / video / "mask" / f"{t:08d}.png")


def direct_count(root: Path, split: str, num_classes: int = 124) -> dict:
    """Counts read straight from the mask PNGs: raw id r in 1..124 is class r - 1."""
    pixels = np.zeros(num_classes, np.int64)
    frames = np.zeros(num_classes, np.int64)
    videos = np.zeros(num_classes, np.int64)
    total = n_frames = 0
    for video in (root / f"{split}.txt").read_text().split():
        seen = set()
        for path in sorted((root / "data" / video / "mask").glob("*.png")):
            raw = np.array(Image.open(path))
            total += raw.size
            n_frames += 1
            for r in range(1, num_classes + 1):
                n = int((raw == r).sum())
                pixels[r - 1] += n
                frames[r - 1] += n > 0
                if n:
                    seen.add(r - 1)
        for c in seen:
            videos[c] += 1
    return {
        "pixel_counts": pixels,
        "frame_counts": frames,
        "video_counts": videos,
        "total_pixels": total,
        "frames": n_frames,
    }


def test_hand_made_split_counts(tmp_path):
    write_video(tmp_path, "a", [[[1, 1, 0], [2, 255, 2]], [[1, 1, 1], [1, 1, 1]]])
    write_video(tmp_path, "b", [[[3, 3, 3], [0, 0, 2]]])
    (tmp_path / "train.txt").write_text("a\nb\n")
    stats = compute_stats(tmp_path, "train", progress=False)
    # class 0 (raw 1): 2 + 6 pixels; class 1 (raw 2): 2 + 1; class 2 (raw 3): 3; 14 of 18 labelled
    assert stats["pixel_counts"][:4] == [8, 3, 3, 0] and sum(stats["pixel_counts"]) == 14
    assert stats["frame_counts"][:4] == [2, 2, 1, 0]
    assert stats["video_counts"][:4] == [1, 2, 1, 0]
    assert (stats["total_pixels"], stats["labelled_pixels"], stats["videos"], stats["frames"]) == (18, 14, 2, 3)
    assert stats["priors"][:3] == pytest.approx([8 / 14, 3 / 14, 3 / 14])
    assert stats["num_classes"] == 124 == len(stats["class_names"]) and stats["class_names"][0] == "wall"


def test_synthetic_split_matches_a_direct_count_of_the_mask_files(synth_root):
    stats = compute_stats(synth_root, "train", progress=False)
    expected = direct_count(synth_root, "train")
    for key in ("pixel_counts", "frame_counts", "video_counts"):
        assert stats[key] == expected[key].tolist(), key
    assert stats["total_pixels"] == expected["total_pixels"] and stats["frames"] == expected["frames"]
    labelled = int(expected["pixel_counts"].sum())
    assert stats["labelled_pixels"] == labelled < stats["total_pixels"]  # synth has "others" and void pixels
    np.testing.assert_allclose(stats["priors"], expected["pixel_counts"] / labelled)
    assert stats["videos"] == len((synth_root / "train.txt").read_text().split())


def test_cli_writes_stats_json_that_read_stats_accepts(run_zoo, synth_root, tmp_path):
    out = tmp_path / "sub" / "stats.json"
    result = run_zoo("data", "stats", synth_root, "--split", "train", "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "classes present" in result.stdout
    written = json.loads(out.read_text())
    assert written == compute_stats(synth_root, "train", progress=False)
    stats = read_stats(out)
    assert stats["pixel_counts"].dtype == np.int64 and stats["priors"].shape == (124,)
    assert not list(out.parent.glob(".*tmp")), "temporary file left behind"


def test_cli_bad_root_and_split_without_masks_are_clear_errors(run_zoo, synth_root, tmp_path):
    result = run_zoo("data", "stats", tmp_path / "nowhere", "-o", tmp_path / "stats.json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nowhere is not a directory" in result.stderr and "zoo data synth" in result.stderr
    assert not (tmp_path / "stats.json").exists()
    result = run_zoo("data", "stats", synth_root, "--split", "test", "-o", tmp_path / "stats.json")
    assert result.returncode == 1 and "videos without masks" in result.stderr and "--split train" in result.stderr


def test_corrupt_mask_names_the_frame(tmp_path):
    write_video(tmp_path, "a", [[[1, 2], [3, 4]], [[1, 1], [1, 1]]])
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "data" / "a" / "mask" / "00000001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"video 'a', frame '00000001'.*cannot be decoded"):
        compute_stats(tmp_path, "train", progress=False)


def test_split_without_labelled_pixels_is_refused(tmp_path):
    write_video(tmp_path, "a", [[[0, 255], [0, 0]]])
    (tmp_path / "train.txt").write_text("a\n")
    with pytest.raises(DataError, match="no labelled pixel"):
        compute_stats(tmp_path, "train", progress=False)


def valid_stats(c: int = 3) -> dict:
    return {
        "num_classes": c,
        "class_names": [f"c{i}" for i in range(c)],
        "pixel_counts": [4, 1, 0][:c],
        "frame_counts": [1, 1, 0][:c],
        "video_counts": [1, 1, 0][:c],
        "priors": [0.8, 0.2, 0.0][:c],
        "labelled_pixels": 5,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pixel_counts": [4, 1]}, "'pixel_counts' has 2 entries but num_classes is 3"),
        ({"video_counts": [1, -1, 0]}, r"video_counts\[1\]: Input should be greater than or equal to 0 \(got -1\)"),
        ({"frame_counts": [1.5, 1, 0]}, r"frame_counts\[0\]: Input should be a valid integer \(got 1.5\)"),
        ({"pixel_counts": [0, 0, 0]}, "every class has 0 pixels"),
        ({"class_names": ["a"]}, "'class_names' has 1 entries but num_classes is 3"),
        ({"num_classes": "3"}, "num_classes: Input should be a valid integer \\(got '3'\\)"),
        ({"priors": None}, r"priors: Input should be a valid list \(got None\)"),
        ({"pixel_counts": [[4], 1, 0]}, r"pixel_counts\[0\]: Input should be a valid integer \(got \[4\]\)"),
        ({"priors": [0.8, float("nan"), 0.0]}, r"priors\[1\]: Input should be a finite number"),
        ({"labelled_pixels": [5]}, r"labelled_pixels: Input should be a valid integer"),
    ],
)
def test_read_stats_checks_the_format(tmp_path, change, message):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({**valid_stats(), **change}))
    with pytest.raises(DataError, match=f"{path}.*{message}.*zoo data stats"):
        read_stats(path)


def test_read_stats_missing_file_field_and_bad_json(tmp_path):
    with pytest.raises(DataError, match="nope.json do not exist; write it with 'zoo data stats"):
        read_stats(tmp_path / "nope.json")
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({k: v for k, v in valid_stats().items() if k != "pixel_counts"}))
    with pytest.raises(DataError, match="pixel_counts: required but missing"):
        read_stats(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        read_stats(path)


def test_pixel_distribution_loss_built_from_stats_end_to_end(synth_root, tmp_path, monkeypatch):
    write_stats(tmp_path / "stats.json", compute_stats(synth_root, "train", progress=False))
    monkeypatch.chdir(tmp_path)  # the path in the YAML args is relative to the current directory
    loss = get_catalog().build("loss", "pixel-distribution", {"stats": "stats.json"}, num_classes=124)
    counts = direct_count(synth_root, "train")["pixel_counts"]
    mean = counts.sum() / 124
    expected = [math.sqrt(n / mean) for n in counts]
    np.testing.assert_allclose(loss.class_weight.numpy(), expected, rtol=1e-6)
    with pytest.raises(DataError, match="stats.json has 124 classes but the head predicts 5"):
        get_catalog().build("loss", "pixel-distribution", {"stats": "stats.json"}, num_classes=5)
