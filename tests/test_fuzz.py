"""Mutated inputs through the public entry points: every failure is a ZooError, and nothing is written.

Pipelines (mutations of examples/quickstart.yaml), split files, registry cards, locks, class
statistics, confusion matrices and label tables are mutated by hypothesis: keys deleted,
values swapped for other types, huge numbers, unicode, random bytes. In-process, each must
load or raise a :class:`ZooError`; a few run through the CLI in a subprocess, which must
print one error line, no traceback, and write nothing outside its ``--out``. Bounded: the
whole file runs in well under a minute, with fixed examples (``derandomize``) so CI is stable.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo_core.data.stats import read_stats
from zoo_core.data.vspw import VSPWDataset
from zoo_core.errors import ZooError
from zoo_core.evaluation.confusion import read_confusion
from zoo_core.hub.cards import load_card_file
from zoo_core.hub.client import Lock
from zoo_core.pipeline.schema import load_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((REPO_ROOT / "examples" / "quickstart.yaml").read_text())
SHA = "ab" * 32
CARD = {
    "name": "tiny.fuzz",
    "summary": "a card to mutate",
    "plugin": {"distribution": "zoo-core", "min_version": "0.1"},
    "model": {"config": QUICKSTART["model"]},
    "num_classes": 124,
    "class_names": [f"c{i}" for i in range(124)],
    "hub": {
        "repo_id": "org/tiny",
        "revision": "c" * 40,
        "filename": "model.safetensors",
        "files": {"config.json": SHA, "model.safetensors": SHA},
        "size": 10,
    },
    "metrics": {"split": "val", "miou": 0.5},
    "license": "mit",
}
LOCK = {
    "version": 2,
    "weights": {
        "tiny.fuzz": {
            "repo_id": "org/tiny",
            "revision": "c" * 40,
            "filename": "model.safetensors",
            "files": {"config.json": SHA, "model.safetensors": SHA},
        }
    },
}
STATS = {
    "num_classes": 3,
    "class_names": ["a", "b", "c"],
    "pixel_counts": [4, 1, 0],
    "frame_counts": [1, 1, 0],
    "video_counts": [1, 1, 0],
    "priors": [0.8, 0.2, 0.0],
    "labelled_pixels": 5,
    "root": "data",
    "split": "train",
}
CONFUSION = {"class_names": ["a", "b"], "matrix": [[3, 1], [0, 2]]}

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "..",
            "../../etc",
            "/abs/path",
            "a/../..",
            "card:x",
            "💥",
            "\x00",
            "1e400",
            "-1",
            "null",
            "model.safetensors",
            "timm",
            "fcn",
            "flip",
            "~",
            "${HOME}",
            "\u202e",
        ]
    ),
)
VALUES = st.one_of(LEAVES, st.lists(LEAVES, max_size=3), st.dictionaries(st.text(max_size=6), LEAVES, max_size=3))


def places(tree: Any, path: tuple = ()) -> list[tuple]:
    """Every (container, key) in ``tree``: the places a mutation may change."""
    found = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        found.append((tree, key))
        found += places(value, path + (key,))
    return found


def mutate(data: st.DataObject, tree: Any) -> Any:
    """One to four changes: delete a key, swap a value for any other, add a key, or wrap a value in a list."""
    tree = copy.deepcopy(tree)
    for _ in range(data.draw(st.integers(1, 4), label="changes")):
        spots = places(tree)
        if not spots:
            break
        container, key = data.draw(st.sampled_from(spots), label="where")
        action = data.draw(st.sampled_from(["delete", "swap", "add", "wrap"]), label="action")
        if action == "delete":
            del container[key]
        elif action == "swap":
            container[key] = data.draw(VALUES, label="value")
        elif action == "add" and isinstance(container, dict):
            container[data.draw(st.text(max_size=8), label="new key")] = data.draw(VALUES, label="value")
        else:
            container[key] = [container[key]]
    return tree


def text_of(data: st.DataObject, tree: Any, dump: Callable[[Any], str]) -> bytes:
    """The mutated tree as text, sometimes with a slice replaced by random text or bytes."""
    raw = dump(tree).encode("utf-8")
    if data.draw(st.booleans(), label="text mutation"):
        start = data.draw(st.integers(0, len(raw)), label="at")
        end = data.draw(st.integers(start, min(len(raw), start + 40)), label="to")
        insert = data.draw(st.one_of(st.binary(max_size=16), st.text(max_size=16).map(str.encode)), label="insert")
        raw = raw[:start] + insert + raw[end:]
    return raw


def to_yaml(tree: Any) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


def to_json(tree: Any) -> str:
    return json.dumps(tree)  # NaN and Infinity are written as JSON's readers accept them


def loads_or_zoo_error(load: Callable[[], Any]) -> Any:
    """``load()``'s result, or None when it raised a ZooError; any other exception fails the test."""
    try:
        return load()
    except ZooError as exc:
        assert str(exc).strip(), "an error must say something"
        return None


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- in-process --------------------------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_mutated_pipelines_validate_or_raise_a_zoo_error(data):
    raw = text_of(data, mutate(data, QUICKSTART), to_yaml)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pipeline.yaml"
        path.write_bytes(raw)
        loads_or_zoo_error(lambda: load_pipeline(path))
        assert files_in(Path(folder)) == ["pipeline.yaml"]


LINE_PARTS = st.sampled_from(
    ["v1", "v2", "..", ".", "/", "\\", "a", "\x00", " ", "\t", "é", "💥", "C:", ".hidden", "~", "\r", "data", "etc"]
)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.lists(LINE_PARTS, max_size=5).map("".join), max_size=6).map(
            lambda lines: "\n".join(lines).encode("utf-8")
        ),
    )
)
def test_split_files_read_or_raise_and_never_leave_the_data_folder(content):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "root"
        for video in ("v1", "v2"):
            (root / "data" / video).mkdir(parents=True)
        (root / "val.txt").write_bytes(content)
        dataset = loads_or_zoo_error(lambda: VSPWDataset(root, "val"))
        if dataset is not None:
            data_dir = (root / "data").resolve()
            assert all((data_dir / video).resolve().parent == data_dir for video in dataset.videos), dataset.videos
        assert files_in(root) == ["data", "data/v1", "data/v2", "val.txt"]


@FUZZ
@given(st.data())
def test_mutated_cards_load_or_raise_a_zoo_error(data):
    raw = text_of(data, mutate(data, CARD), to_yaml)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "card.yaml"
        path.write_bytes(raw)
        card = loads_or_zoo_error(lambda: load_card_file(path))
        if card is not None:  # what a pull would download stays inside the repository
            assert ".." not in card.hub.filename.split("/") and not card.hub.filename.startswith("/")


@FUZZ
@given(st.data())
def test_mutated_locks_load_or_raise_a_zoo_error(data):
    raw = text_of(data, mutate(data, LOCK), to_json)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "zoo.lock"
        path.write_bytes(raw)
        lock = loads_or_zoo_error(lambda: Lock.load(path))
        if lock is not None:
            for entry in lock.entries.values():
                assert ".." not in entry.filename.split("/") and not entry.filename.startswith("/")
                assert "model.safetensors" in entry.files


@FUZZ
@given(st.data(), st.sampled_from(["stats", "confusion", "labels"]))
def test_mutated_label_count_files_load_or_raise_a_zoo_error(data, kind):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if kind == "stats":
            path = folder / "stats.json"
            path.write_bytes(text_of(data, mutate(data, STATS), to_json))
            stats = loads_or_zoo_error(lambda: read_stats(path))
            if stats is not None:
                assert stats["pixel_counts"].shape == (stats["num_classes"],) and (stats["pixel_counts"] >= 0).all()
        elif kind == "confusion":
            path = folder / "confusion.json"
            path.write_bytes(text_of(data, mutate(data, CONFUSION), to_json))
            found = loads_or_zoo_error(lambda: read_confusion(path))
            if found is not None:
                matrix, names = found
                assert matrix.shape == (len(names), len(names)) and (matrix >= 0).all()
        else:
            (folder / "data" / "v1").mkdir(parents=True)
            (folder / "val.txt").write_text("v1\n")
            table = {"others": "0", **{f"class{i}": str(i) for i in range(1, 125)}}
            (folder / "label_num_dic_final.json").write_bytes(text_of(data, mutate(data, table), to_json))
            dataset = loads_or_zoo_error(lambda: VSPWDataset(folder, "val"))
            if dataset is not None:
                assert len(dataset.class_names) == 124


# --- through the CLI, a handful of examples ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    from zoo_core.data.synth import synthesize

    root = tmp_path_factory.mktemp("fuzz-data") / "synth"
    synthesize(root, videos=2, frames=2, size=(32, 48), seed=3)
    return root


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_the_cli_prints_one_error_line_and_writes_only_into_out(run_zoo, dataset_root, data):
    """``zoo run`` of a mutated quickstart (its weights do not exist, so every run must fail cleanly)."""
    pipeline = mutate(data, QUICKSTART)
    if isinstance(pipeline.get("data"), dict):
        pipeline["data"]["root"] = str(dataset_root)  # past the data, where the mutation left it valid
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "pipeline.yaml").write_bytes(text_of(data, pipeline, to_yaml))
        before = files_in(dataset_root)
        result = run_zoo("run", work / "pipeline.yaml", "--out", work / "out", cwd=work)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert [line for line in result.stderr.splitlines() if line.startswith("error: ")], result.stderr
        assert [f for f in files_in(work) if not f.startswith("out")] == ["pipeline.yaml"]
        assert files_in(dataset_root) == before
