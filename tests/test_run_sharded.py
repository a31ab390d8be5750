"""`zoo run --nproc 2`: the videos split across two real torchrun processes (gloo, CPU), the output equal
byte for byte to one process's, a failing rank reported in one line, resume with and without ``--nproc``.

The ensembler is ``fail-at`` of the ``zoo-faulty`` test distribution (test_run_errors): the mean of the
models' probabilities that fails on a chosen call number, counted per process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_run_errors import FAULTY, error_lines, faulty, save_model  # noqa: F401 (faulty: a fixture)

from zoo_core.cli import main
from zoo_core.data.synth import synthesize
from zoo_core.parallel import command_args
from zoo_core.testing import TINY_MODEL, run_cli

FRAMES = 10  # per video: mVC8 and mVC16 have windows to average
VIDEOS = 3  # in val: rank 0 predicts the first and the third, rank 1 the second


@pytest.fixture(scope="module")
def setup(tmp_path_factory, faulty) -> dict:  # noqa: F811
    folder = tmp_path_factory.mktemp("sharded")
    summary = synthesize(folder / "synth", videos=3 * VIDEOS, frames=FRAMES, size=(64, 96), seed=4)
    assert len(summary.splits["val"]) == VIDEOS
    return {
        "root": summary.root,
        "videos": list(summary.splits["val"]),
        "models": [save_model(folder / name, TINY_MODEL, seed) for name, seed in (("a", 0), ("b", 1))],
        "folder": folder,
    }


@pytest.fixture(scope="module")
def reference(setup) -> Path:
    """The output of one uninterrupted process."""
    out = setup["folder"] / "one"
    result = run_cli("run", pipeline_file(setup["folder"], setup, None), "--out", out)
    assert result.exit_code == 0, result.output
    assert '"mvc8": 0.' in (out / "metrics.json").read_text()  # the mVC sums are part of the comparison
    return out


def pipeline_file(folder: Path, setup: dict, fail_at: int | None) -> Path:
    """Two models (one with flip TTA) averaged by ``fail-at``, which fails on its call ``fail_at`` in a process."""
    pipeline = {
        "data": {"root": str(setup["root"]), "split": "val"},
        "models": [
            {"name": "a", "weights": str(setup["models"][0]), "tta": {"type": "flip"}},
            {"name": "b", "weights": str(setup["models"][1])},
        ],
        "ensemble": {"type": "fail-at", "args": {"at": fail_at}},
        "output": {"overlays": 2},
        "runtime": {"amp": "none", "progress": False, "threads": 1},
    }
    path = folder / f"pipeline-{fail_at}.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def files(run: Path) -> dict[str, bytes]:
    """Every file a run leaves for its user (predictions, metrics, confusion, report), by relative path."""
    found = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    return {name: data for name, data in found.items() if name.split("/")[0] in ("pred", "report", "state")} | {
        name: found[name] for name in ("metrics.json", "confusion.json")
    }


def assert_same_output(run: Path, reference: Path) -> None:
    got, expected = files(run), files(reference)
    assert sorted(got) == sorted(expected)
    assert len([n for n in expected if n.startswith("pred/")]) == VIDEOS * FRAMES
    assert len([n for n in expected if n.startswith("report/overlays/")]) == 2
    for name, data in expected.items():
        assert got[name] == data, f"{name} differs from the one-process run's"


def test_a_one_process_run_resumed_by_two_processes_writes_what_one_process_writes(
    setup,
    reference,
    faulty,
    zoo_cli,
    run_zoo,
    tmp_path,  # noqa: F811
):
    # A one-process run stopped after its first video, resumed by two processes: rank 0 predicts the third
    # video, rank 1 the second; rank 0 merges the three videos' statistics in the one-process order.
    sharded = tmp_path / "sharded"
    first_video_only = zoo_cli("run", pipeline_file(tmp_path, setup, FRAMES), "--out", sharded)
    assert first_video_only.exit_code == 2 and len(list((sharded / "state").iterdir())) == 1
    pipeline = pipeline_file(tmp_path, setup, FRAMES)
    result = run_zoo("run", pipeline, "--out", sharded, "--nproc", "2", env=faulty.env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "resumed: 1 finished video(s) skipped, 2 to predict" in result.stderr
    assert_same_output(sharded, reference)


def test_a_failing_rank_is_one_line_and_the_run_resumes_without_nproc(
    setup,
    reference,
    faulty,
    zoo_cli,
    run_zoo,
    tmp_path,  # noqa: F811
):
    videos = setup["videos"]
    # fail-at counts its calls per process: rank 1 finishes its one video, rank 0 fails in its second video.
    failing = pipeline_file(tmp_path, setup, FRAMES + 1)
    out = tmp_path / "run"
    result = run_zoo("run", failing, "--out", out, "--nproc", "2", env=faulty.env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr
    frame = sorted((setup["root"] / "data" / videos[2] / "origin").iterdir())[1].stem
    assert error_lines(result.stderr) == [
        f"error: ensembler 'fail-at' (zoo-faulty 0.3.1) failed on video {videos[2]} frame {frame}: "
        f"ValueError: call {FRAMES + 1} is over the budget"
    ]
    assert sorted(p.stem for p in (out / "state").iterdir()) == videos[:2]

    # The same pipeline in one process: only the third video is left, fail-at's budget is enough for it.
    resumed = zoo_cli("run", failing, "--out", out)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed: 2 finished video(s) skipped, 1 to predict" in resumed.stderr
    assert_same_output(out, reference)


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (
            "run",
            ["p.yaml", "--nproc", "2", "--set", "a=1", "--amp", "bf16", "--set", "b=[1, 2]"],
            ["run", "p.yaml", "--out", "runs/latest", "--set", "a=1", "--set", "b=[1, 2]", "--amp", "bf16"],
        ),
        ("train", ["p.yaml", "--resume", "--nproc=3", "--out", "o"], ["train", "p.yaml", "--out", "o", "--resume"]),
        ("train", ["p.yaml", "--nproc", "2"], ["train", "p.yaml", "--out", "runs/train"]),
    ],
)
def test_nproc_starts_each_process_with_the_same_arguments_but_nproc(command, args, expected):
    group = main.make_context("zoo", [command])  # only the subcommand's own context matters
    subcommand = main.get_command(group, command)
    assert command_args(subcommand.make_context(command, args, parent=group), skip=("nproc",)) == expected
