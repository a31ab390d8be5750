"""Untrusted inputs give one-line errors, never a traceback, and nothing is written outside --out.

Split files name video folders (one plain folder name a line, UTF-8); label tables, class
statistics and locks are validated; each case runs the CLI in a subprocess.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from zoo_core.data.synth import synthesize
from zoo_core.data.vspw import VSPWDataset, read_split_file
from zoo_core.errors import DataError
from zoo_core.model_dir import build_segmentor, save_model_dir

MODEL_CONFIG = {
    "num_classes": 124,
    "backbone": {"type": "timm", "args": {"model_name": "test_resnet", "out_indices": [1, 2]}},
    "heads": [{"type": "fcn", "args": {"channels": 8, "num_convs": 1}}],
}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A synthetic dataset (``data/``) and a model directory (``model/``)."""
    work = tmp_path_factory.mktemp("bad-inputs")
    synthesize(work / "data", videos=3, frames=2, size=(32, 48), seed=1)
    save_model_dir(build_segmentor(MODEL_CONFIG).eval(), MODEL_CONFIG, work / "model")
    return work


@pytest.fixture
def root(work, tmp_path) -> Path:
    """A copy of the dataset that a test may change."""
    return Path(shutil.copytree(work / "data", tmp_path / "data"))


def pipeline_file(folder: Path, root: Path, model: Path, split: str = "val", **extra) -> Path:
    pipeline = {
        "data": {"root": str(root), "split": split},
        "model": MODEL_CONFIG,
        "models": [{"name": "m", "weights": str(model)}],
        "runtime": {"progress": False},
        **extra,
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_line_error(result) -> str:
    """The CLI's error line; fails on a traceback or a zero exit."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# --- split files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, problem",
    [
        ("/abs/path", "it holds a path separator"),
        ("a/../..", "it holds a path separator"),
        ("..", "it names a folder itself"),
        (".", "it names a folder itself"),
        ("a\\b", "it holds a path separator"),
        ("x\x00y", "it holds a NUL character"),
        ("C:video", "it names a drive"),
    ],
)
def test_a_video_name_must_be_one_plain_folder_name(tmp_path, line, problem):
    split = tmp_path / "val.txt"
    split.write_text(f"first\n\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_split_file(split)
    assert str(err.value).startswith(f"split file {split}, line 3: {line!r} is not a video folder name ({problem}")
    assert str(err.value).endswith(f"); write one folder name of {tmp_path / 'data'} per line")


def test_a_split_file_must_be_utf8_and_the_line_is_named(tmp_path):
    split = tmp_path / "val.txt"
    split.write_bytes("vidéo\n".encode() + b"second\n\xe9t\xe9\n")
    with pytest.raises(DataError, match=rf"split file {split}, line 3: not UTF-8 text \(byte 0xe9\); save it as UTF-8"):
        read_split_file(split)
    split.write_bytes("vidéo\n\n  .hidden  \nzweite\n".encode())
    assert read_split_file(split) == ["vidéo", "zweite"]  # blank lines and hidden names are skipped


def test_a_byte_order_mark_is_not_part_of_the_first_name(root, tmp_path):
    videos = VSPWDataset(root, "val").videos
    (root / "val.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(videos).encode() + b"\r\n")  # as Notepad saves it
    assert read_split_file(root / "val.txt") == videos
    assert VSPWDataset(root, "val").videos == videos
    split = tmp_path / "val.txt"
    split.write_bytes(b"\xef\xbb\xbffirst\nsecond\n\xe9t\xe9\n")
    with pytest.raises(DataError, match=rf"split file {split}, line 3: not UTF-8 text \(byte 0xe9\)"):
        read_split_file(split)


@pytest.mark.parametrize("line", ["/abs/path", "a/../..", ".."])
def test_zoo_run_with_a_split_that_leaves_the_dataset_writes_nothing(run_zoo, work, root, tmp_path, line):
    video = VSPWDataset(root, "val").videos[0]
    if line == "/abs/path":  # a real video folder outside the dataset: before, its PNGs were written there
        line = str(Path(shutil.copytree(root / "data" / video, tmp_path / "elsewhere" / video)))
    (root / "val.txt").write_text(f"{video}\n{line}\n")
    path = pipeline_file(tmp_path, root, work / "model")
    before = listing(tmp_path)
    error = one_line_error(run_zoo("run", path, "--out", tmp_path / "out"))
    assert error.startswith(f"error: split file {root / 'val.txt'}, line 2: {line!r} is not a video folder name")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command", ["run", "eval"])
def test_a_split_file_that_is_not_utf8_is_one_line(run_zoo, work, root, tmp_path, command):
    (root / "val.txt").write_bytes(b"\xff\xfe" + b"v\0i\0d\0")  # UTF-16, as some editors save
    if command == "run":
        args = ["run", pipeline_file(tmp_path, root, work / "model"), "--out", tmp_path / "out"]
    else:
        (tmp_path / "pred").mkdir()
        args = ["eval", tmp_path / "pred", "--data", root]
    error = one_line_error(run_zoo(*args))
    assert error == (
        f"error: split file {root / 'val.txt'}, line 1: not UTF-8 text (byte 0xff); save it as UTF-8, "
        "one video folder name per line"
    )
    assert not (tmp_path / "out").exists()


# --- model directories ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [[], {"fp16": True}])
def test_a_dtype_that_is_not_a_name_is_one_line(run_zoo, work, tmp_path, dtype):
    model = Path(shutil.copytree(work / "model", tmp_path / "model"))
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(dict(config, dtype=dtype)))
    error = one_line_error(run_zoo("run", pipeline_file(tmp_path, work / "data", model), "--out", tmp_path / "out"))
    assert error == (
        f"error: {model / 'config.json'}: dtype {dtype!r} is not one of fp32, fp16, bf16; "
        "convert the weights again with zoo convert --dtype"
    )


# --- label tables, class statistics, locks ----------------------------------------------------------


def test_a_label_table_with_a_list_value_is_one_line(run_zoo, root, tmp_path):
    table = json.loads((root / "label_num_dic_final.json").read_text())
    table["wall"] = [table["wall"]]
    (root / "label_num_dic_final.json").write_text(json.dumps(table))
    (tmp_path / "pred").mkdir()
    error = one_line_error(run_zoo("eval", tmp_path / "pred", "--data", root))
    assert error.startswith(f"error: {root / 'label_num_dic_final.json'} is not a JSON object of class name -> id")
    assert "wall: Input should be a valid integer (got ['1'])" in error


def test_class_statistics_with_a_list_value_are_one_line(run_zoo, work, tmp_path):
    stats = {
        "num_classes": 124,
        "class_names": [f"c{i}" for i in range(124)],
        "pixel_counts": [[5]] + [1] * 123,
        "frame_counts": [1] * 124,
        "video_counts": [1] * 124,
        "priors": [1 / 124] * 124,
        "labelled_pixels": 128,
    }
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    path = pipeline_file(
        tmp_path,
        work / "data",
        work / "model",
        split="train",
        train={
            "max_iters": 1,
            "batch_size": 1,
            "lr": 0.01,
            "loss": {"type": "pixel-distribution", "args": {"stats": str(tmp_path / "stats.json")}},
            "transforms": [{"type": "random-crop", "size": [32, 48]}],
        },
    )
    error = one_line_error(run_zoo("train", path, "--out", tmp_path / "trained"))
    assert (
        f"class statistics {tmp_path / 'stats.json'}: pixel_counts[0]: Input should be a valid integer "
        "(got [5])" in error
    )


def lock_with(tmp_path: Path, filename: str) -> Path:
    entry = {
        "repo_id": "org/tiny",
        "revision": "1" * 40,
        "filename": filename,
        "files": {"config.json": "2" * 64, "model.safetensors": "3" * 64},
    }
    path = tmp_path / "team.lock"
    path.write_text(json.dumps({"version": 2, "weights": {"tiny": entry}}))
    return path


def test_a_lock_whose_filename_leaves_the_repository_is_refused(run_zoo, work, tmp_path):
    lock = lock_with(tmp_path, "../../outside/model.safetensors")
    path = pipeline_file(tmp_path, work / "data", work / "model", lock=str(lock))
    before = listing(tmp_path)
    error = one_line_error(run_zoo("run", path, "--out", tmp_path / "out"))
    assert error.startswith(f"error: {lock}: invalid zoo.lock; restore it or write a new one with a run")
    assert listing(tmp_path) == before

    cards = tmp_path / "cards"
    cards.mkdir()
    card = {
        "name": "tiny",
        "plugin": {"distribution": "zoo-core"},
        "model": {"config": MODEL_CONFIG},
        "num_classes": 124,
        "class_names": [f"c{i}" for i in range(124)],
        "license": "mit",
        "hub": {
            "repo_id": "org/tiny",
            "revision": "1" * 40,
            "files": {"config.json": "2" * 64, "model.safetensors": "3" * 64},
        },
    }
    (cards / "tiny.yaml").write_text(yaml.safe_dump(card))
    env = {"ZOO_REGISTRY_PATH": str(cards), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)}
    result = run_zoo("pull", "tiny", "--lock", lock, env=env)
    assert one_line_error(result).startswith(f"error: {lock}: invalid zoo.lock")
    assert "weights.tiny.filename: must be model.safetensors, or a folder path" in result.stderr
