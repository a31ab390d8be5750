"""``zoo compare RUN_DIR RUN_DIR ...``: several ``zoo run`` results side by side.

Each run directory holds ``metrics.json`` (the metrics and the per-class IoU) and
``pipeline.json`` (the pipeline, hence the split). The first run is the baseline: every other
run's metrics and per-class IoU are shown as differences against it, in percentage points.
Runs are comparable only when they scored the same split, the same classes and the same videos.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import ConfigError, DataError
from ..fileio import atomic_path, atomic_write_text
from .command import SUMMARY

METRICS_NAME = "metrics.json"
STAMP_NAME = "pipeline.json"  # written by `zoo run` (zoo_core.pipeline.run.STAMP_NAME)
STATE_DIR = "state"  # one <video>.npz per video a run has finished (zoo_core.pipeline.run)


@dataclass(frozen=True)
class RunResult:
    """One run directory as compared: its label, split, evaluated videos (None: unknown) and metrics."""

    name: str
    path: Path
    split: str
    videos: tuple[str, ...] | None
    metrics: dict


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _points(difference: float) -> float:
    """A difference in points, rounded: 1e-14 from float arithmetic is no gain, and -0.0 shows as 0.00."""
    return round(difference, 10) + 0.0


def load_run(path: Path, name: str) -> RunResult:
    """Read a run directory; a clear error for one that was not evaluated or that no `zoo run` wrote."""
    stamp_path, metrics_path = path / STAMP_NAME, path / METRICS_NAME
    if not path.is_dir():
        raise DataError(f"run directory {path} does not exist; give the --out directory of a `zoo run`")
    if not stamp_path.is_file():
        raise DataError(
            f"{path} is not a `zoo run` directory (no {STAMP_NAME}); give the --out directory of `zoo run PIPELINE`"
        )
    stamp = _read_json(stamp_path)
    data = stamp.get("pipeline", {}).get("data", {}) if isinstance(stamp.get("pipeline"), dict) else {}
    split = data.get("split") if isinstance(data, dict) else None
    if not isinstance(split, str):
        raise DataError(f"{stamp_path}: field 'pipeline.data.split' is missing; it is not the record of a `zoo run`")
    if not metrics_path.is_file():
        raise DataError(
            f"{path} has no {METRICS_NAME}: the run is unfinished or its split {split!r} has no ground truth; "
            f"rerun `zoo run PIPELINE --out {path}` to finish it (its pipeline is saved as {path / 'pipeline.yaml'}), "
            "on a split with masks"
        )
    metrics = _read_json(metrics_path)
    per_class = metrics.get("per_class_iou")
    if not isinstance(per_class, dict) or not per_class:
        raise DataError(f"{metrics_path}: field 'per_class_iou' must be an object of class name -> IoU")
    for key, value in [
        *((k, metrics.get(k)) for k, _ in SUMMARY),
        *(("per_class_iou." + k, v) for k, v in per_class.items()),
    ]:
        if value is not None and (
            not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1
        ):
            raise DataError(
                f"{metrics_path}: field {key!r} is {value!r}, expected a fraction in 0..1 or null; "
                "rerun `zoo run` to rewrite it"
            )
    state = path / STATE_DIR
    videos = tuple(sorted(p.stem for p in state.glob("*.npz"))) if state.is_dir() else None
    return RunResult(name=name, path=path, split=split, videos=videos or None, metrics=metrics)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path} is unreadable ({exc}); rerun `zoo run` to rewrite it") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(value).__name__}; rerun `zoo run` to rewrite it")
    return value


def check_comparable(runs: list[RunResult], split: str | None) -> str:
    """The runs' common split; an error naming the run that scored another split, classes or videos."""
    first = runs[0]
    expected = split if split is not None else first.split
    for run in runs:
        if run.split != expected:
            origin = "--split" if split is not None else f"run {first.name!r} ({first.path})"
            raise ConfigError(
                f"run {run.name!r} ({run.path}) is of split {run.split!r}, not {expected!r} as {origin}: "
                "compare runs of one split"
            )
    classes = list(first.metrics["per_class_iou"])
    for run in runs[1:]:
        other = list(run.metrics["per_class_iou"])
        if other != classes:
            only_first = [c for c in classes if c not in other]
            only_other = [c for c in other if c not in classes]
            detail = (
                f"e.g. {only_first[0]!r} only in {first.name!r}"
                if only_first
                else f"e.g. {only_other[0]!r} only in {run.name!r}"
                if only_other
                else "the same names in another order"
            )
            raise ConfigError(
                f"run {run.name!r} ({run.path}) has {len(other)} classes and {first.name!r} {len(classes)}, "
                f"{detail}: compare runs of models with one class set"
            )
        if first.videos is not None and run.videos is not None and run.videos != first.videos:
            missing = sorted(set(first.videos) - set(run.videos)) or sorted(set(run.videos) - set(first.videos))
            raise ConfigError(
                f"run {run.name!r} ({run.path}) evaluated {len(run.videos)} videos and {first.name!r} "
                f"{len(first.videos)} (e.g. {missing[0]!r} in only one): compare runs over the same videos"
            )
    return expected


def compare(runs: list[RunResult], split: str | None = None, top: int = 5) -> dict:
    """The comparison as JSON-ready data, in percent: each run's summary metrics and per-class IoU, and for every
    run after the first its differences against the first (summary, per class) and the ``top`` classes that
    gained and lost most. A class counts in the differences only where both runs' ground truth holds it."""
    split = check_comparable(runs, split)
    base = runs[0]
    keys = [(key, label) for key, label in SUMMARY if any(r.metrics.get(key) is not None for r in runs)]
    result: dict = {
        "split": split,
        "baseline": base.name,
        "metrics": [key for key, _ in keys],
        "runs": [
            {
                "name": run.name,
                "path": str(run.path),
                "metrics": {key: _pct(run.metrics.get(key)) for key, _ in keys},
                "per_class_iou": {c: _pct(v) for c, v in run.metrics["per_class_iou"].items()},
            }
            for run in runs
        ],
        "deltas": [],
    }
    base_row = result["runs"][0]
    for row in result["runs"][1:]:
        per_class = {
            c: _points(row["per_class_iou"][c] - iou)
            for c, iou in base_row["per_class_iou"].items()
            if iou is not None and row["per_class_iou"][c] is not None
        }
        ranked = sorted(per_class.items(), key=lambda item: (-item[1], item[0]))  # best first, ties by name
        result["deltas"].append(
            {
                "name": row["name"],
                "metrics": {
                    key: None
                    if row["metrics"][key] is None or base_row["metrics"][key] is None
                    else _points(row["metrics"][key] - base_row["metrics"][key])
                    for key, _ in keys
                },
                "per_class_iou": dict(ranked),
                "gained": [{"class": c, "delta": d} for c, d in ranked[:top] if d > 0],
                "lost": [{"class": c, "delta": d} for c, d in reversed(ranked[-top:]) if d < 0],
            }
        )
    return result


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def markdown(result: dict) -> str:
    """The summary table (each later run with its difference to the baseline), the classes that gained and lost
    most, and the per-class IoU of every run."""
    labels = dict(SUMMARY)
    runs, deltas = result["runs"], result["deltas"]
    header = ["metric (%)", *(r["name"] for r in runs)]
    lines = [
        f"Split {result['split']!r}; differences in percentage points against {result['baseline']!r}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for key in result["metrics"]:
        cells = [_value(runs[0]["metrics"][key])]
        cells += [f"{_value(r['metrics'][key])} ({_signed(d['metrics'][key])})" for r, d in zip(runs[1:], deltas)]
        lines.append(f"| {labels[key]} | " + " | ".join(cells) + " |")
    for delta in deltas:
        lines += ["", f"{delta['name']!r} against {result['baseline']!r}:"]
        for kind in ("gained", "lost"):
            shown = ", ".join(f"{e['class']} {_signed(e['delta'])}" for e in delta[kind]) or "none"
            lines.append(f"- {kind} most: {shown}")
    lines += ["", "| class | " + " | ".join(r["name"] for r in runs) + " |", "|" + "---|" * (len(runs) + 1)]
    for name, base_iou in runs[0]["per_class_iou"].items():
        if base_iou is None and all(r["per_class_iou"][name] is None for r in runs):
            continue  # absent from the ground truth
        cells = [_value(base_iou)]
        for run, delta in zip(runs[1:], deltas):
            change = delta["per_class_iou"].get(name)
            cells.append(_value(run["per_class_iou"][name]) + ("" if change is None else f" ({_signed(change)})"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Grouped bars of the summary metrics, then one panel per later run: its per-class IoU differences, sorted."""
    import numpy as np
    from matplotlib.figure import Figure

    runs, deltas = result["runs"], result["deltas"]
    rows = max((len(d["per_class_iou"]) for d in deltas), default=0)
    figure = Figure(figsize=(7 + 3 * len(deltas), max(4.0, 1.0 + 0.15 * rows)), layout="constrained")
    panels = figure.subplots(1, 1 + len(deltas), squeeze=False)[0]
    labels = dict(SUMMARY)
    keys = result["metrics"]
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        values = [math.nan if run["metrics"][k] is None else run["metrics"][k] for k in keys]
        panels[0].bar(np.arange(len(keys)) + (i - (len(runs) - 1) / 2) * width, values, width, label=run["name"])
    panels[0].set_xticks(np.arange(len(keys)), [labels[k] for k in keys], rotation=30, fontsize=8)
    panels[0].set_ylabel("%")
    panels[0].set_ylim(0, 100)
    panels[0].legend(fontsize=7)
    panels[0].set_title(f"Metrics (split {result['split']})", fontsize=9)
    for axes, delta in zip(panels[1:], deltas):
        ranked = list(delta["per_class_iou"].items())  # best first, as compare() ranked them
        positions = np.arange(len(ranked))
        colours = ["tab:green" if d > 0 else "tab:red" for _, d in ranked]
        axes.barh(positions, [d for _, d in ranked], color=colours)
        axes.set_yticks(positions, [c for c, _ in ranked], fontsize=5)
        axes.set_ylim(len(ranked) - 0.5, -0.5)
        axes.axvline(0, color="black", linewidth=0.5)
        axes.set_xlabel("IoU difference (points)")
        axes.set_title(f"{delta['name']} - {result['baseline']}", fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


def run_names(paths: list[Path], names: str | None) -> list[str]:
    """``--names`` split at commas, or each directory's name (its path where two share a name)."""
    if names is None:
        labels = [p.resolve().name or str(p) for p in paths]
        return labels if len(set(labels)) == len(labels) else [str(p) for p in paths]
    labels = [n.strip() for n in names.split(",")]
    if len(labels) != len(paths) or not all(labels):
        raise ConfigError(f"--names {names!r} gives {len(labels)} names for {len(paths)} runs; give one name per run")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--names {names!r} repeats a name; give each run its own name")
    return labels


@click.command("compare")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--split", help="The split every run must have scored (default: the first run's).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default="runs/compare",
    show_default=True,
    help="Folder for compare.md, compare.json and compare.png.",
)
@click.option("--names", help="Comma-separated labels of the runs, in order (default: the directories' names).")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Classes listed as gained/lost.")
def compare_command(run_dirs: tuple[Path, ...], split: str | None, out: Path, names: str | None, top: int) -> None:
    """Several `zoo run` directories side by side: metrics and per-class IoU against the first.

    The first RUN_DIR is the baseline. Prints the table and writes OUT/compare.md,
    OUT/compare.json (percentages) and OUT/compare.png (metric bars and per-class IoU
    differences).
    """
    paths = list(run_dirs)
    if len(paths) < 2:
        raise ConfigError(f"zoo compare needs two or more run directories, got {len(paths)}; the first is the baseline")
    runs = [load_run(p, n) for p, n in zip(paths, run_names(paths, names))]
    result = compare(runs, split, top)
    text = markdown(result)
    click.echo(text, nl=False)
    atomic_write_text(out / "compare.md", text)
    atomic_write_text(out / "compare.json", json.dumps(result, indent=2) + "\n")
    plot(result, out / "compare.png")
    click.echo(f"wrote {out / 'compare.md'}, {out / 'compare.json'} and {out / 'compare.png'}")
